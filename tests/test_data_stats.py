"""dataset_stats / `medcap data stats`: the paper's Figures 2 and 3, the long tail, a JSON summary."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from medcap.data import dataset_stats, read_dataset
from medcap.data.stats import caption_length_figure, compute_stats, concept_frequency_figure, concepts_per_image_figure
from medcap.errors import MedcapError
from test_dataset import write_csv, write_dataset


def _dataset(root):
    write_dataset(root)
    write_csv(root / "train_captions.csv",
              'ID,Caption\ntrain_0,"one two three"\ntrain_1,"a, b"\ntrain_2,"x\ny z w v"\ntrain_3,single\n')
    write_csv(root / "train_concepts.csv",
              "ID,CUIs\ntrain_0,C0040405;C0817096;C0000726\ntrain_1,C0040405\ntrain_2,C0040405;C0817096\ntrain_3,\n")
    return root


def test_summary_numbers_match_the_data(tmp_path):
    stats = compute_stats(read_dataset(_dataset(tmp_path / "d")))
    train = stats["splits"]["train"]
    assert train["images"] == 4
    words = train["captions"]["words"]  # 3, 2, 5, 1 words
    assert (words["mean"], words["median"], words["min"], words["max"], words["n"]) == (2.75, 2.5, 1, 5, 4)
    per = train["concepts"]
    assert per["per_image_histogram"] == {"0": 1, "1": 1, "2": 1, "3": 1}
    assert per["distinct_cuis"] == 3 and per["per_image"]["mean"] == 1.5
    assert stats["figure_split"] == "train"
    assert stats["top_concepts"][0] == {"cui": "C0040405", "name": "X-Ray Computed Tomography", "images": 3,
                                        "fraction": 0.75}
    assert stats["concept_frequency"]["concepts"] == 3 and stats["concept_frequency"]["seen_once"] == 1
    assert stats["cui_mapping_entries"] == 5


def test_writes_three_figures_and_the_json_summary(tmp_path):
    out = tmp_path / "stats"
    stats = dataset_stats(_dataset(tmp_path / "d"), out)
    assert sorted(p.name for p in out.iterdir()) == ["caption_lengths.png", "concept_frequency.png",
                                                     "concepts_per_image.png", "stats.json"]
    for name in stats["figures"].values():
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] >= 600
    assert json.loads((out / "stats.json").read_text()) == stats


def test_figure_functions_return_figures_for_reuse_and_refuse_empty_data():
    fig = caption_length_figure([1, 2, 2, 3] * 50 + [400])
    assert fig.axes[0].get_xlabel() == "words per caption"
    assert "not shown" in " ".join(t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert concepts_per_image_figure([1, 2, 2, 4]).axes[0].get_xlabel() == "concepts per image"
    assert concept_frequency_figure([5, 1, 30]).axes[0].get_yscale() == "log"
    with pytest.raises(MedcapError):
        caption_length_figure([])


def test_a_split_without_captions_gets_no_caption_figure(tmp_path):
    root = tmp_path / "d"
    write_csv(root / "train_concepts.csv", "ID,CUIs\na,C0040405\nb,C0040405;C0817096\n")
    stats = dataset_stats(root, tmp_path / "out")
    assert set(stats["figures"]) == {"concepts_per_image", "concept_frequency"}


def test_existing_unrelated_folder_is_refused_and_left_untouched(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(MedcapError, match="not a previous stats folder"):
        dataset_stats(_dataset(tmp_path / "d"), out)
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]


def test_rerun_replaces_a_previous_stats_folder(tmp_path):
    root, out = _dataset(tmp_path / "d"), tmp_path / "stats"
    dataset_stats(root, out)
    (out / "old.png").write_bytes(b"x")
    dataset_stats(root, out)
    assert not (out / "old.png").exists() and (out / "stats.json").exists()


def test_failure_while_writing_leaves_no_output(tmp_path, monkeypatch):
    import medcap.data.stats as st

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(st, "concept_frequency_figure", boom)
    with pytest.raises(RuntimeError):
        dataset_stats(_dataset(tmp_path / "d"), tmp_path / "stats")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


# --------------------------------------------------------------------------- CLI
def test_cli_stats_writes_the_folder_and_exits_0(tmp_path, cli):
    rc, out, err = cli("data", "stats", _dataset(tmp_path / "d"), "--out", tmp_path / "s")
    assert rc == 0, err
    assert "train: 4 images, 3 CUIs, 1.50 concepts/image, captions 2.8 words on average" in out
    assert f"wrote {tmp_path / 's' / 'stats.json'}" in out


def test_cli_stats_on_a_malformed_dataset_is_one_line_exit_2_and_writes_nothing(tmp_path, cli):
    root = _dataset(tmp_path / "d")
    write_csv(root / "train_captions.csv", 'ID,Caption\ntrain_0,"ok"\ntrain_1\n')
    rc, out, err = cli("data", "stats", root, "--out", tmp_path / "s")
    assert rc == 2 and out == ""
    assert err.strip() == f"error: {root / 'train_captions.csv'}:3: expected 2 fields (ID,Caption), found 1: 'train_1'"
    assert not (tmp_path / "s").exists()
