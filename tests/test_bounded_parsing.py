"""Issue 26 items 8 and 6: label and submission files are read line by line in bounded memory
(violations past a cap are counted, a file whose kept rows pass the memory cap is one line), and a
label row over 100 CUIs is malformed: training drops it and says so, the vocabulary never sees it."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from medcap.data import checker_csv, textlines
from medcap.data.csvio import read_concepts_csv, scan_concepts_csv
from medcap.errors import MedcapError
from medcap.submission import check_caption_submission, check_concept_submission

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("notice:", "warning:"))]
    assert len(lines) == 1, err
    return lines[0]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


# -- 8. bounded parsing: the caps, small ------------------------------------------------------
def test_violations_past_the_cap_are_counted_and_the_cli_gives_the_total(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(checker_csv, "MAX_VIOLATIONS", 3)
    gold = _write(tmp_path / "gold.csv", "ID,CUIs\nimg_1,C1\n")
    pred = _write(tmp_path / "pred.csv", "ID,CUIs\n" + "".join(f"other_{i},C1\n" for i in range(10)))
    _, violations = check_concept_submission(pred, ["img_1"])
    assert [v.line for v in violations[:3]] == [2, 3, 4] and violations.total == 11  # 10 unknown IDs, 1 missing
    assert violations[3].message.startswith("1 of the 1 gold IDs have no row")  # file-level: always listed
    assert violations[-1].message == "... and 7 more rule violations (the first 3 are listed)"
    rc, _, err = cli("evaluate", "concepts", "--gold", gold, "--pred", pred)
    assert rc == 1 and "error: " + str(pred) + ": 11 rule violation(s)" in err and "and 7 more" in err


def test_past_the_cap_bytes_that_are_not_utf8_still_count_once(tmp_path, monkeypatch):
    monkeypatch.setattr(checker_csv, "MAX_VIOLATIONS", 3)
    pred = tmp_path / "pred.csv"
    pred.write_bytes(b"ID,CUIs\n" + b"".join(b"a%d,X1\n" % i for i in range(5))
                     + b"".join(b"b%d,C1;C2 \xff\n" % i for i in range(4)))
    _, violations = check_concept_submission(pred)
    # 5 bad CUIs, the file's first non-UTF-8 line, then 4 rows with a CUI that is not one
    assert violations.total == 5 + 1 + 4


def test_with_gold_ids_rows_not_in_the_gold_file_are_reported_but_never_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(textlines, "MAX_TABLE_BYTES", 4_000)  # a dozen kept rows at most
    rows = "".join(f'other_{i},"caption {i}"\n' for i in range(500)) + 'other_7,"again"\nimg_1,"kept"\n'
    pred = _write(tmp_path / "pred.csv", "ID,Caption\n" + rows)
    captions, violations = check_caption_submission(pred, ["img_1"])
    assert captions == {"img_1": "kept"}
    assert (502, "the ID other_7 appears again (first on line 9)") in [(v.line, v.message) for v in violations]
    assert violations.total == 501


@pytest.mark.parametrize("kind", ["concepts", "captions"])
def test_without_gold_ids_a_file_past_the_memory_cap_is_one_line_naming_file_and_line(kind, cli, tmp_path,
                                                                                        monkeypatch):
    monkeypatch.setattr(textlines, "MAX_TABLE_BYTES", 20_000)
    row = "C1;C2" if kind == "concepts" else '"a caption"'
    pred = _write(tmp_path / "pred.csv", ("ID,CUIs\n" if kind == "concepts" else "ID,Caption\n")
                  + "".join(f"img_{i},{row}\n" for i in range(1000)))
    rc, _, err = cli("validate", kind, pred)
    line = _one_line(err)
    assert rc == 2 and re.search(rf"{re.escape(str(pred))}:\d+: too many rows", line), line


def test_a_label_file_past_the_memory_cap_is_one_line_in_the_readers_and_data_check(cli, synth_small, tmp_path,
                                                                                     monkeypatch):
    data = Path(shutil.copytree(synth_small, tmp_path / "data"))
    monkeypatch.setattr(textlines, "MAX_TABLE_BYTES", 30_000)
    labels = data / "train_concepts.csv"
    with open(labels, "a") as f:
        f.writelines(f"extra_{i},C0040405;C0817096\n" for i in range(2000))
    with pytest.raises(MedcapError, match="too many rows") as e:
        read_concepts_csv(labels)
    assert e.value.file == str(labels) and e.value.line > 1
    rc, _, err = cli("data", "check", data, "--no-images")
    assert rc == 2 and "too many rows" in _one_line(err) and str(labels) in err



def test_a_label_file_of_syntax_errors_alone_is_held_to_the_memory_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(textlines, "MAX_TABLE_BYTES", 30_000)  # no row is ever valid: each is a problem
    labels = _write(tmp_path / "c.csv", "ID,CUIs\n" + "".join(f'a{i},"C1"x\n' for i in range(2000)))
    with pytest.raises(MedcapError, match="too many rows") as e:
        scan_concepts_csv(labels)
    assert e.value.file == str(labels) and 2 < e.value.line < 2000

def test_lines_end_as_in_the_csv_module_lone_carriage_returns_included(tmp_path):
    path = _write(tmp_path / "cr.csv", 'ID,Caption\r\na1,"two\r\nlines"\rb2,old Mac line end\ra3,"x"\n')
    table = scan_captions_csv_lines(path)
    assert table == {"a1": 2, "b2": 4, "a3": 5}
    sub = _write(tmp_path / "sub.csv", "ID,CUIs\rimg_1,C1\rimg_2,C2\r")
    assert check_concept_submission(sub) == ({"img_1": ["C1"], "img_2": ["C2"]}, [])


def scan_captions_csv_lines(path: Path) -> dict[str, int]:
    from medcap.data.csvio import scan_captions_csv

    table = scan_captions_csv(path)
    assert not table.problems, table.problems
    return table.lines


# -- 6. a label row over 100 CUIs is malformed ------------------------------------------------
def _cuis(n: int, start: int = 9_000_000) -> str:
    return ";".join(f"C{start + k}" for k in range(n))


def test_a_label_row_over_100_cuis_is_refused_and_kept_apart(tmp_path):
    path = _write(tmp_path / "c.csv", f"ID,CUIs\na1,{_cuis(100)}\na2,{_cuis(5000)}\na3,C1\n")
    table = scan_concepts_csv(path)
    assert [(p.line, p.kind) for p in table.problems] == [(3, "too_many_concepts")]
    assert "5,000 CUIs; at most 100 per image" in table.problems[0].message
    assert set(table.values) == {"a1", "a3"} and len(table.dropped["a2"]) == 5000 and table.rejected == {"a2": 3}
    with pytest.raises(MedcapError, match="5,000 CUIs") as e:
        read_concepts_csv(path)
    assert e.value.line == 3


def test_a_parquet_row_over_100_cuis_is_dropped_by_training_and_listed_by_data_check(tmp_path):
    from medcap.data.check import check_dataset
    from medcap.data.dataset import read_dataset
    from medcap.data.drops import split_drops
    from test_dataset import _rows, _write_parquet

    rows = _rows("train", 3)
    rows[1]["cui"] = _cuis(101).split(";")
    _write_parquet(tmp_path / "roco" / "train-00000-of-00001.parquet", rows)
    split = read_dataset(tmp_path / "roco").split("train")
    assert rows[1]["id"] not in split.concepts and len(split.malformed_rows[rows[1]["id"]]) == 101
    drops = split_drops(split)
    assert drops.malformed == [rows[1]["id"]] and drops.rows == 3 and len(drops.lost_concepts) == 101
    assert [p.kind for p in check_dataset(tmp_path / "roco", decode_images=False)] == ["too_many_concepts"]


def _with_huge_rows(src: Path, dst: Path, n: int) -> tuple[Path, list[str]]:
    """A copy of ``src`` whose first ``n`` training rows hold 5,000 new CUIs each."""
    data = Path(shutil.copytree(src, dst))
    lines = (data / "train_concepts.csv").read_text().splitlines()
    ids = [ln.split(",", 1)[0] for ln in lines[1:n + 1]]
    lines[1:n + 1] = [f"{i},{_cuis(5000, 9_000_000 + 10_000 * k)}" for k, i in enumerate(ids)]
    (data / "train_concepts.csv").write_text("\n".join(lines) + "\n")
    return data, ids


def test_data_check_lists_a_row_over_100_cuis(cli, synth_small, tmp_path):
    data, ids = _with_huge_rows(synth_small, tmp_path / "data", 1)
    rc, out, _ = cli("data", "check", data, "--no-images")
    assert rc == 1 and "train_concepts.csv:2: 5,000 CUIs; at most 100 per image" in out
    assert "1 too_many_concepts" in out and f"ID {ids[0]!r}" not in out  # not also "no row" or "not in"


def test_training_drops_a_row_of_5000_cuis_says_so_and_its_cuis_never_reach_the_vocabulary(cli, synth_small,
                                                                                          tmp_path):
    from medcap.config import resolve_config
    from medcap.data.vocab import ConceptVocabulary
    from medcap.training.concepts import ConceptConfig, load_concept_data

    data, ids = _with_huge_rows(synth_small, tmp_path / "data", 1)
    overrides = ["image_size=32", "epochs=1", "max_minutes=0", "batch_size=16", "progress=false"]
    rc, out, err = cli("train", "concepts", "--config", "demo", "--data", data, "--out", tmp_path / "run",
                       *[a for o in overrides + ["allow_missing_images=true"] for a in ("--set", o)])
    assert rc == 0, err
    summary = [ln for ln in (out + err).splitlines() if "label rows used" in ln]
    assert len(summary) == 1 and "1 malformed" in summary[0] and repr(ids[0]) in summary[0]
    assert "5,000 concepts appear only in dropped rows" in summary[0]
    # The same vocabulary as training without the row at all.
    clean = Path(shutil.copytree(synth_small, tmp_path / "clean"))
    lines = (clean / "train_concepts.csv").read_text().splitlines()
    (clean / "train_concepts.csv").write_text("\n".join(ln for ln in lines if not ln.startswith(ids[0] + ",")))
    expected = load_concept_data(clean, resolve_config(ConceptConfig, "demo", "concepts", overrides), log=print)
    vocab = ConceptVocabulary.load(tmp_path / "run" / "model")
    assert len(vocab) == len(expected.vocabulary) and not any(c.startswith("C9") for c in vocab.cuis)


def test_training_refuses_when_rows_over_100_cuis_pass_one_percent(cli, synth_small, tmp_path):
    data, _ = _with_huge_rows(synth_small, tmp_path / "data", 3)
    rc, _, err = cli("train", "concepts", "--config", "demo", "--data", data, "--out", tmp_path / "run",
                     "--set", "image_size=32", "--set", "progress=false")
    assert rc == 2 and "3 of 48 label rows" in err and "3 have a malformed row" in err, err
    assert not (tmp_path / "run" / "model").exists()


def test_a_captioner_that_reads_no_concepts_does_not_count_a_refused_concept_row(synth_small, tmp_path):
    from medcap.data import read_dataset
    from medcap.data.drops import split_drops

    data, ids = _with_huge_rows(synth_small, tmp_path / "data", 1)
    train = read_dataset(data).split("train")
    assert ids[0] in train.malformed_rows and ids[0] in train.captions  # its caption is still there
    assert ids[0] in split_drops(train).malformed  # a detector (or a concept-prompted captioner) drops it
    plain = split_drops(train, concept_rows=False)  # a plain captioner uses the image and its caption
    assert plain.dropped == 0 and plain.lost_concepts == []


# -- 8. bounded parsing, measured: 200 MB of many normal lines --------------------------------
_SIZE = 200 << 20
_GOLD_ID = "SYNTH_2025_test_000001"


def _rows(kind: str, task: str):
    value = "C0040405;C0817096;C0000726" if task == "concepts" else '"Chest X-ray showing a small effusion, left."'
    if kind == "unknown_ids":    # (a) valid-looking rows, IDs not in the gold file
        return lambda i: f"ImageCLEFmedical_Caption_2026_test_{i:08d},{value}\n"
    if kind == "duplicates":     # (b) one valid row again and again
        return lambda i: f"{_GOLD_ID},{value}\n"
    if kind == "random_ids":     # (c) random unique IDs
        return lambda i: f"{uuid.uuid4().hex},{value}\n"
    return lambda i: f" img_{i}, c12;;x\n" if task == "concepts" else f" img_{i},Chest, unquoted, commas \n"  # (d)


def _big_file(path: Path, header: str, row) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(header)
        written, i = 0, 0
        while written < _SIZE:
            block = "".join(row(k) for k in range(i, i + 10_000))
            f.write(block)
            written, i = written + len(block), i + 10_000
    return path


def _peak_kib(*args) -> tuple[int, str, int]:
    # VmHWM: this process's peak (ru_maxrss would carry pytest's own peak over fork + exec)
    code = ("import re, sys\nfrom medcap.cli import main\ntry:\n    rc = main(sys.argv[1:])\nfinally:\n"
            "    print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\nsys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=900, env=env)
    return int(done.stdout.split()[-1]), done.stderr, done.returncode


@pytest.mark.slow
@pytest.mark.parametrize("task", ["concepts", "captions"])
@pytest.mark.parametrize("kind", ["unknown_ids", "duplicates", "random_ids", "rule_broken"])
def test_evaluate_of_200_mb_of_many_lines_stays_under_300_mb(kind, task, tmp_path, synth_small):
    header = "ID,CUIs\n" if task == "concepts" else "ID,Caption\n"
    pred = _big_file(tmp_path / "pred.csv", header, _rows(kind, task))
    peak, err, rc = _peak_kib("evaluate", task, "--gold", synth_small / f"test_{task}.csv", "--pred", pred)
    print(f"{task} {kind}: VmHWM {peak / 1024:.0f} MB")
    assert rc == 1 and "rule violation(s); not scored" in err.splitlines()[-1]
    assert peak < 300 * 1024, peak


@pytest.mark.slow
@pytest.mark.parametrize("command", ["validate", "data-check"])
def test_a_200_mb_label_or_submission_file_read_without_gold_ids_stays_under_300_mb(command, tmp_path, synth_small):
    if command == "validate":
        path = _big_file(tmp_path / "pred.csv", "ID,CUIs\n", _rows("random_ids", "concepts"))
        args = ("validate", "concepts", path)
    else:
        data = Path(shutil.copytree(synth_small, tmp_path / "data"))
        path = _big_file(data / "train_captions.csv", "ID,Caption\n", _rows("unknown_ids", "captions"))
        args = ("data", "check", data, "--no-images")
    peak, err, rc = _peak_kib(*args)
    print(f"{command}: VmHWM {peak / 1024:.0f} MB")
    assert rc == 2 and "too many rows" in _one_line(err) and str(path) in err
    assert peak < 300 * 1024, peak
