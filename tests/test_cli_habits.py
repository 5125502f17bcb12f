"""CLI habits (issue 24): a positional argument given as a flag, --version, bare medcap, Ctrl-C
in training, --resume of a folder without a run."""
from __future__ import annotations

import shlex

import pytest

import medcap


def test_a_positional_argument_given_as_a_flag_says_how_to_pass_it(cli, tmp_path):
    rc, _, err = cli("data", "check", "--data", tmp_path)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "--data is not an option" in err and "DATASET is a positional argument" in err
    assert "data check DATASET" in err
    rc, _, err = cli("data", "check", "--nonsense", tmp_path)  # other unknown options: click's message
    assert rc == 2 and "No such option: --nonsense" in err


def test_version_and_bare_medcap(cli):
    rc, out, _ = cli("--version")
    assert rc == 0 and out.strip() == f"medcap {medcap.__version__}"
    rc, out, _ = cli()
    assert rc == 0 and "Usage:" in out and "train" in out and "--version" in out


@pytest.mark.parametrize("task", ["concepts", "captions"])
def test_resume_of_a_folder_without_a_run_is_one_line_and_creates_nothing(cli, synth_small, tmp_path, task):
    out = tmp_path / "no-run"
    rc, _, err = cli("train", task, "--config", "demo", "--data", synth_small, "--out", out, "--resume")
    assert rc != 0 and "nothing to resume" in err and "does not exist" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    out.mkdir()
    rc, _, err = cli("train", task, "--config", "demo", "--data", synth_small, "--out", out, "--resume")
    assert rc != 0 and "holds no training run" in err and list(out.iterdir()) == []  # no lock file either


def test_the_engine_refuses_resume_without_a_run_before_creating_anything(tmp_path):
    from medcap.errors import MedcapError
    from medcap.training.engine import TrainConfig, Trainer

    with pytest.raises(MedcapError, match="nothing to resume"):
        Trainer(object(), TrainConfig(epochs=1), tmp_path / "empty").fit(resume=True)
    assert not (tmp_path / "empty").exists()


@pytest.mark.parametrize("task, fn", [("concepts", "medcap.training.concepts.train_concepts"),
                                      ("captions", "medcap.training.captions.train_captioner")])
def test_ctrl_c_in_training_names_the_last_checkpoint_and_the_resume_command(cli, monkeypatch, tmp_path, task, fn):
    out = tmp_path / "run dir"  # a space: the command must be quoted to be pasted back

    def interrupted(*args, **kwargs):
        from medcap.training.checkpoints import CHECKPOINT_FILES, CHECKPOINT_WEIGHTS

        ckpt = out / "checkpoints" / "epoch-002"  # what an epoch leaves (the interrupt came in the next one)
        ckpt.mkdir(parents=True)
        for name in (*CHECKPOINT_FILES, CHECKPOINT_WEIGHTS[0]):
            (ckpt / name).write_bytes(b"x")
        raise KeyboardInterrupt

    monkeypatch.setattr(fn, interrupted)
    args = ["train", task, "--config", "demo", "--data", str(tmp_path / "d"), "--out", str(out), "--set", "lr=1e-3"]
    rc, _, err = cli(*args)
    assert rc == 130 and len(err.strip().splitlines()) == 1
    assert f"the last checkpoint is {out / 'checkpoints' / 'epoch-002'};" in err
    assert err.strip().endswith(shlex.join(["medcap", *args, "--resume"])), repr(err)


def test_ctrl_c_before_the_first_checkpoint_names_the_resume_that_starts_afresh(cli, monkeypatch, tmp_path):
    import shlex

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("medcap.training.concepts.train_concepts", interrupted)
    args = ["train", "concepts", "--config", "demo", "--data", str(tmp_path), "--out", str(tmp_path / "r")]
    rc, _, err = cli(*args)
    assert rc == 130 and "interrupted before the first checkpoint" in err
    assert f"{shlex.join(['medcap', *args, '--resume'])} starts the run afresh" in err  # as --resume does (#26)
