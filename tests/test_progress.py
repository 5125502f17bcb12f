"""Progress and noise (issue 24): bars on a terminal only, the training bar follows the time budget,
BERTScore shows progress, transformers' bars and warnings are hidden unless --verbose."""
from __future__ import annotations

import io
import types

import torch

from medcap import progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_is_written_on_a_terminal_and_nothing_elsewhere():
    log, tty = io.StringIO(), FakeTerminal()
    assert list(progress.bar(range(3), desc="work", file=log)) == [0, 1, 2] and log.getvalue() == ""
    list(progress.bar(range(3), desc="work", file=tty))
    assert "work" in tty.getvalue()
    never = FakeTerminal()
    list(progress.bar(range(3), desc="work", show=False, file=never))
    assert never.getvalue() == ""


def test_with_a_time_budget_the_training_bar_counts_the_budgets_seconds():
    clock = iter([30.0, 45.0, 60.0, 90.0])  # before the epoch, then after each batch
    tty = FakeTerminal()
    bar = progress.BudgetBar(["a", "b", "c"], 120.0, lambda: next(clock), desc="epoch 2/100", file=tty)
    assert bar.bar.total == 120 and bar.bar.n == 30  # the seconds used before this epoch count
    assert list(bar) == ["a", "b", "c"]
    assert bar.bar.n == 90  # after the last batch: the run's elapsed seconds, not the batch count
    bar.set_postfix(loss="0.1")
    text = tty.getvalue()
    bar.close()
    assert "of the time budget" in text and "left" in text and "epoch 2/100" in text
    assert isinstance(progress.training_bar([1], 0, 1, 60.0, lambda: 0.0, show=False), progress.BudgetBar)
    assert not isinstance(progress.training_bar([1], 0, 1, float("inf"), lambda: 0.0, show=False),
                          progress.BudgetBar)  # no budget: the epoch's batches


def test_the_engine_gives_its_bar_the_time_budget(monkeypatch, tmp_path):
    from medcap.training.engine import Trainer
    from test_engine import ToyTask, _cfg

    seen = []

    def spy(loader, epoch, epochs, budget_s, elapsed, show):
        seen.append((epochs, budget_s, elapsed() >= 0))
        return progress.bar(loader, show=False)

    monkeypatch.setattr(progress, "training_bar", spy)
    Trainer(ToyTask(), _cfg(epochs=1, max_minutes=5), tmp_path / "a").fit()
    assert seen == [(1, 300.0, True)]


def test_bertscore_shows_progress_on_a_terminal_with_the_same_scores(monkeypatch):
    import bert_score.utils as bert_utils

    from medcap.metrics import textscores

    def encode(chunk, model, tokenizer, idf_dict, device):  # bert-score's (B, L, D) vectors, mask, idf
        width = max(len(x) for x in chunk) + 2
        shape = (len(chunk), width)
        emb, mask, idf = torch.zeros(*shape, 3), torch.zeros(shape), torch.zeros(shape)
        for k, x in enumerate(chunk):
            emb[k, :len(x) + 2] = torch.tensor([1.0, float(len(x)), 0.5])
            mask[k, :len(x) + 2], idf[k, 1:len(x) + 1] = 1, 1.0
        return emb, mask, idf

    monkeypatch.setattr(bert_utils, "get_bert_embedding", encode)
    monkeypatch.setattr(bert_utils, "sent_encode", lambda tokenizer, x: [0] * (len(x) + 2))
    shown, real_bar = [], progress.bar
    monkeypatch.setattr(progress, "bar", lambda it, show=True, **kw: shown.append(show) or real_bar(it, show=False))
    scorer = object.__new__(textscores.BertScorer)
    scorer._scorer = types.SimpleNamespace(_model=None, _tokenizer=None, _idf_dict={}, device="cpu")
    scorer.batch_size = 2
    gold, pred = [f"r{i}" for i in range(9)], [f"c{i}" * i for i in range(9)]
    whole = scorer.pair_scores(gold, pred)
    assert shown == [False]  # not a terminal (pytest): no bar
    monkeypatch.setattr(progress, "on_terminal", lambda stream=None: True)
    again = scorer.pair_scores(gold, pred)
    assert shown == [False, True] and all((a == b).all() for a, b in zip(whole, again, strict=True))


def _states():
    import huggingface_hub.utils as hub
    from transformers.utils import logging as hf_logging

    return hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled(), hub.are_progress_bars_disabled()


def test_transformers_bars_and_warnings_are_off_inside_and_restored_after(monkeypatch):
    import os

    from transformers.utils import logging as hf_logging

    for key in progress.QUIET_ENV:
        monkeypatch.delenv(key, raising=False)
    before = _states()
    with progress.quiet_libraries(verbose=True):
        assert all(key not in os.environ for key in progress.QUIET_ENV) and _states() == before
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")  # the user's own setting wins
    with progress.quiet_libraries():
        assert os.environ["TRANSFORMERS_VERBOSITY"] == "info" and os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
        assert not hf_logging.is_progress_bar_enabled() and hf_logging.get_verbosity() == hf_logging.ERROR
    assert _states() == before and "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ


def test_loading_a_transformers_model_shows_no_bar_when_quiet(tmp_path, capsys):
    from transformers import BlipForConditionalGeneration
    from transformers.utils import logging as hf_logging

    from medcap.models.captioner import Captioner

    folder = tmp_path / "blip"
    captioner = Captioner.from_scratch("tiny", ["a chest x-ray"], vocab_size=60, seed=0, image_size=32)
    captioner.model.save_pretrained(folder)
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    try:
        capsys.readouterr()
        BlipForConditionalGeneration.from_pretrained(folder)
        shown = capsys.readouterr().err
        with progress.quiet_libraries():
            BlipForConditionalGeneration.from_pretrained(folder)
        assert "Loading weights" in shown and "Loading weights" not in capsys.readouterr().err
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def test_verbose_may_follow_the_command(cli, synth_small, monkeypatch):
    import contextlib

    import medcap.progress as p

    seen = []

    @contextlib.contextmanager
    def spy(verbose=False):
        seen.append(verbose)
        yield

    monkeypatch.setattr(p, "quiet_libraries", spy)
    rc, _, err = cli("data", "check", synth_small, "--verbose")
    assert rc == 0, err
    rc, _, err = cli("--verbose", "data", "check", synth_small)
    assert rc == 0, err
    rc, _, _ = cli("data", "check", synth_small)
    assert seen == [True, True, False]
