"""Configs you can see (issue 24): --print-config, --help with each key's meaning and the chosen
config's value, and "did you mean" for config names."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from medcap.config import config_help, config_keys, field_meanings
from medcap.errors import MedcapError
from medcap.training.captions import CaptionConfig, load_caption_config
from medcap.training.concepts import ConceptConfig, load_concept_config


@pytest.mark.parametrize("task, load", [("concepts", load_concept_config), ("captions", load_caption_config)])
def test_print_config_prints_the_resolved_yaml_and_needs_no_data(cli, tmp_path, task, load):
    rc, out, err = cli("train", task, "--config", "demo", "--set", "lr=0.003", "--set", "seed=7", "--print-config")
    assert rc == 0, err
    printed = yaml.safe_load(out)
    assert printed == dataclasses.asdict(load("demo", {"lr": 0.003, "seed": 7}))
    assert printed["lr"] == 0.003 and printed["name"] == "demo"
    # with --data/--out given it still runs nothing and creates nothing
    rc, _, _ = cli("train", task, "-c", "demo", "--data", tmp_path / "d", "--out", tmp_path / "run", "--print-config")
    assert rc == 0 and not (tmp_path / "run").exists()


def test_print_config_of_a_bad_override_is_the_usual_one_line_error(cli):
    rc, out, err = cli("train", "concepts", "--config", "demo", "--set", "lrr=1", "--print-config")
    assert rc != 0 and out == "" and "did you mean 'lr'" in err and len(err.strip().splitlines()) == 1


def test_train_help_shows_each_keys_meaning_and_the_chosen_configs_value(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    rc, out, _ = cli("train", "concepts", "--config", "demo", "--help")
    assert rc == 0
    demo = load_concept_config("demo")
    line = next(ln for ln in out.splitlines() if "backbone = " in ln)
    assert f"backbone = {demo.model.backbone!r}" in line and "timm name" in line  # demo's value, not the default
    assert "max_minutes = 8.0" in out and "wall-clock budget" in out
    rc, out, _ = cli("train", "captions", "--help")  # no --config: the default config (paper)
    assert rc == 0 and "model = 'Salesforce/blip-image-captioning-large'" in out and "config 'paper'" in out


@pytest.mark.parametrize("cls", [ConceptConfig, CaptionConfig])
def test_every_set_key_has_a_one_line_meaning_from_the_dataclass_comments(cls):
    meanings = field_meanings(cls)
    keys = [k for k, _ in config_keys(cls)]   # a nested config's keys (ConceptConfig.model) included
    assert [k for k in keys if not meanings.get(k)] == []
    assert all("\n" not in m for m in meanings.values())
    # a comment continued on the next line belongs to the key above it; section headings to none
    assert meanings["max_minutes"].startswith("wall-clock budget") and "steps/time" in meanings["max_minutes"]
    assert len(config_help(cls)) == len(keys)


def test_a_subclass_re_defaulting_a_key_keeps_the_base_meaning():
    assert field_meanings(CaptionConfig)["epochs"].startswith("epoch budget")


@pytest.mark.parametrize("task, load, typo, meant", [("concepts", load_concept_config, "papr", "paper"),
                                                       ("captions", load_caption_config, "demo-promted",
                                                        "demo-prompted")])
def test_a_misspelt_config_name_gets_did_you_mean(task, load, typo, meant):
    with pytest.raises(MedcapError, match=f"unknown {task} config '{typo}'; did you mean '{meant}'"):
        load(typo)


def test_a_misspelt_config_name_on_the_command_line_is_one_line(cli):
    rc, _, err = cli("train", "concepts", "--config", "dmeo", "--print-config")
    assert rc != 0 and "did you mean 'demo'" in err and len(err.strip().splitlines()) == 1


def test_help_rows_wrap_under_the_meaning_column():
    rows = config_help(ConceptConfig, width=70)
    lines = [ln for row in rows for ln in row.split("\n")]
    col = rows[0].index("bce")  # where the meanings start
    assert all(len(ln) <= 70 for ln in lines)
    assert any(ln.startswith(" " * col) and ln.strip() for ln in lines)  # a continued meaning
