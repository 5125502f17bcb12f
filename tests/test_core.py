"""The shared pieces every module relies on: one-line errors, atomic writes, configs, CLI."""
from __future__ import annotations

import dataclasses

import pytest

from medcap.config import load_config, parse_overrides
from medcap.errors import MedcapError
from medcap.fileio import atomic_dir, atomic_write


def test_error_names_file_and_line_on_one_line():
    e = MedcapError("expected ID,CUIs\nbut got junk", file="a.csv", line=3)
    assert str(e) == "a.csv:3: expected ID,CUIs but got junk"
    assert "\n" not in e.format()


def test_atomic_write_leaves_old_file_untouched_on_failure(tmp_path):
    p = tmp_path / "sub.csv"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as f:
            f.write("half")
            raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["sub.csv"]


def test_atomic_dir_appears_complete_or_not_at_all(tmp_path):
    out = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as d:
            (d / "config.json").write_text("{}")
            raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(out) as d:
        (d / "a").write_text("1")
    with atomic_dir(out) as d:  # replacing an existing folder
        (d / "b").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b"]


@dataclasses.dataclass
class _Cfg:
    name: str = ""
    lr: float = 1e-4
    epochs: int = 10
    frozen: bool = False
    sizes: list[int] = dataclasses.field(default_factory=lambda: [1, 2])
    path: str | None = None


def test_config_from_yaml_with_base_and_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("lr: 0.001\nepochs: 3\n")
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {base}\nfrozen: true\n")
    cfg = load_config(_Cfg, child, "concepts", ["epochs=7", "sizes=[3,4]", "path=none"])
    assert (cfg.lr, cfg.epochs, cfg.frozen, cfg.sizes, cfg.path) == (0.001, 7, True, [3, 4], None)


def test_config_unknown_key_names_file_and_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("lr: 0.1\nlearning_rate: 0.2\n")
    with pytest.raises(MedcapError, match=r"bad.yaml: unknown config key 'learning_rate'"):
        load_config(_Cfg, p, "concepts")
    with pytest.raises(MedcapError, match="command line: unknown config key 'nope'"):
        load_config(_Cfg, p.with_name("ok.yaml") if False else _write(tmp_path, "lr: 1"), "concepts", ["nope=1"])


def test_config_wrong_type_and_bad_yaml_are_user_errors(tmp_path):
    with pytest.raises(MedcapError, match="epochs: expected int"):
        load_config(_Cfg, _write(tmp_path, "epochs: many"), "concepts")
    with pytest.raises(MedcapError, match=r"x.yaml:2: invalid YAML"):
        load_config(_Cfg, _write(tmp_path, "lr: 1\n  bad: [\n"), "concepts")
    with pytest.raises(MedcapError, match="unknown concepts config 'nonexistent'"):
        load_config(_Cfg, "nonexistent", "concepts")
    with pytest.raises(MedcapError, match="expected KEY=VALUE"):
        parse_overrides(["lr"])


def _write(tmp_path, text):
    p = tmp_path / "x.yaml"
    p.write_text(text)
    return p


def test_cli_help_lists_command_groups(cli):
    rc, out, _ = cli("--help")
    assert rc == 0
    for group in ("data", "train", "predict", "evaluate", "validate", "baseline"):
        assert group in out


def test_cli_usage_error_is_short_and_nonzero(cli):
    rc, out, err = cli("no-such-command")
    assert rc != 0
    assert "Traceback" not in out + err


def test_every_public_name_of_the_package_resolves():
    import medcap

    for name in medcap.__all__:
        assert getattr(medcap, name) is not None, name


def test_a_config_built_on_a_base_is_named_after_itself(tmp_path):
    base = _write(tmp_path, "lr: 0.5\n")
    child = tmp_path / "mine.yaml"
    child.write_text(f"base: {base}\n")
    assert load_config(_Cfg, child, "concepts").name == "mine"


def test_atomic_writes_get_normal_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "f.csv") as f:
            f.write("x")
        with atomic_dir(tmp_path / "d") as d:
            (d / "a").write_text("1")
    finally:
        os.umask(mask)
    assert (tmp_path / "f.csv").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_the_umask_is_read_without_changing_it_for_other_threads(monkeypatch):
    import os
    import sys

    from medcap import fileio

    if not sys.platform.startswith("linux"):
        pytest.skip("/proc/self/status is Linux's")
    mask = os.umask(0o027)
    try:
        monkeypatch.setattr(fileio.os, "umask", lambda *_: pytest.fail("os.umask called"))
        assert fileio._umask() == 0o027
    finally:
        monkeypatch.undo()
        os.umask(mask)


def test_unknown_keys_suggest_the_closest_known_key_everywhere(tmp_path):
    from medcap.training.captions import load_caption_config
    from medcap.training.concepts import load_concept_config

    with pytest.raises(MedcapError, match=r"bad.yaml: unknown config key 'epoch'; did you mean 'epochs'"):
        load_config(_Cfg, _write_named(tmp_path, "bad.yaml", "epoch: 2\n"), "concepts")
    with pytest.raises(MedcapError, match=r"command line: unknown config key 'epoch'; did you mean 'epochs'"):
        load_caption_config("demo", ["epoch=3"])
    with pytest.raises(MedcapError, match=r"unknown config key 'num_beam'; did you mean 'num_beams'"):
        load_caption_config("demo", {"num_beam": 3})
    with pytest.raises(MedcapError, match=r"unknown config key 'backbon'; did you mean 'backbone'"):
        load_concept_config("demo", ["backbon=resnet18"])


def test_caption_and_concept_configs_share_the_engine_keys_and_check_them_at_once():
    import dataclasses

    from medcap.training.captions import CaptionConfig, load_caption_config
    from medcap.training.engine import TrainConfig

    engine_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    assert issubclass(CaptionConfig, TrainConfig) and engine_keys <= {f.name for f in dataclasses.fields(CaptionConfig)}
    assert (CaptionConfig().epochs, CaptionConfig().lr, CaptionConfig().optimizer) == (2, 1e-5, "adamw")
    with pytest.raises(MedcapError, match="mixed_precision: expected one of no, bf16, fp16"):
        load_caption_config("demo", ["mixed_precision=fp8"])   # before any data is read


def test_train_help_lists_every_set_key_with_its_value(cli):
    # (the values are the chosen config's, paper by default: tests/test_config_visible.py)
    rc, out, _ = cli("train", "captions", "--help")
    assert rc == 0 and "num_beams = 5" in out and "eval_images = 200" in out and "mixed_precision" in out
    rc, out, _ = cli("train", "concepts", "--help")
    assert rc == 0 and "backbone = 'resnet101'" in out and "per_concept_shrinkage" in out


def _write_named(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p
