"""Submission files: every official rule (REFERENCE §4) has a failing file, every violation is
reported with its line, and the writers refuse to write an invalid file."""
from __future__ import annotations

import csv

import pytest

from medcap.errors import MedcapError
from medcap.submission import (
    check_concept_submission,
    read_caption_submission,
    read_concept_submission,
    validate_caption_submission,
    validate_concept_submission,
    write_caption_submission,
    write_concept_submission,
)

CT, CHEST = "C0040405", "C0817096"
IDS = ["ImageCLEFmedical_Caption_2025_test_0", "ImageCLEFmedical_Caption_2025_test_1"]
A, B = IDS


def write(tmp_path, text: str | bytes, name: str = "sub.csv"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def violations(path, kind="concepts", gold_ids=IDS, **kw):
    check = validate_concept_submission if kind == "concepts" else validate_caption_submission
    return [(v.line, v.message) for v in check(path, gold_ids, **kw)]


# ---------------------------------------------------------------------------------------
# Concept submissions: writing and reading
# ---------------------------------------------------------------------------------------

def test_concept_writer_writes_the_official_format_and_reads_back(tmp_path):
    path = write_concept_submission(tmp_path / "run.csv", {A: [CT, CHEST], B: []}, gold_ids=IDS)
    assert path.read_bytes() == f"ID,CUIs\n{A},{CT};{CHEST}\n{B},\n".encode()
    assert read_concept_submission(path, IDS) == {A: [CT, CHEST], B: []}
    assert validate_concept_submission(path, IDS) == []


@pytest.mark.parametrize("preds, message", [
    ({A: [CT, "c0817096"]}, "not a CUI"),
    ({A: [CT, CT]}, "more than once"),
    ({A: [f"C{i}" for i in range(101)]}, "at most 100"),
    ({A: [""]}, "not a CUI"),
    ({A: [f"{CT};{CHEST}"]}, "not a CUI"),
    ({A: "C0040405"}, "must be a list"),
    ({"bad,id": [CT]}, "image ID"),
    ({" padded": [CT]}, "image ID"),
    ({A: [CT]}, "gold IDs have no row"),  # with gold_ids: B is missing
])
def test_concept_writer_refuses_an_invalid_submission_and_writes_nothing(tmp_path, preds, message):
    path = tmp_path / "run.csv"
    path.write_text("previous content")
    with pytest.raises(MedcapError, match=message):
        write_concept_submission(path, preds, gold_ids=IDS)
    assert path.read_text() == "previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["run.csv"]  # no temporary file left


def test_hundred_concepts_are_allowed_and_an_empty_list_only_when_allowed(tmp_path):
    path = write_concept_submission(tmp_path / "run.csv", {A: [f"C{i}" for i in range(100)], B: []})
    assert len(read_concept_submission(path)[A]) == 100
    with pytest.raises(MedcapError, match="at least one"):
        write_concept_submission(tmp_path / "strict.csv", {A: [CT], B: []}, allow_empty=False)


def test_reader_refuses_an_invalid_file_naming_the_line(tmp_path):
    path = write(tmp_path, f"ID,CUIs\n{A},{CT}\n{B},{CT};x1\n")
    with pytest.raises(MedcapError) as e:
        read_concept_submission(path)
    assert e.value.line == 3 and "not a CUI" in e.value.message


# ---------------------------------------------------------------------------------------
# Concept submissions: one failing file per rule
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, line, message", [
    (f"\ufeffID,CUIs\n{A},{CT}\n{B},{CT}\n", 1, "byte-order mark"),
    (f"ID,CUI\n{A},{CT}\n{B},{CT}\n", 1, "header must be exactly ID,CUIs"),
    (f"{A},{CT}\n{B},{CT}\n", 1, "missing header"),
    (f"ID,CUIs\n{A},{CT}\n\n{B},{CT}\n", 3, "blank line"),
    (f"ID,CUIs\n{A},{CT}\n{B},{CT}\n   \n", 4, "blank line"),
    (f"ID,CUIs\n{A},{CT}\n{B}\n", 3, "expected 2 fields"),
    (f"ID,CUIs\n{A},{CT},{CHEST}\n{B},{CT}\n", 2, "expected 2 fields"),
    (f"ID,CUIs\n{A} ,{CT}\n{B},{CT}\n", 2, "leading or trailing spaces"),
    (f"ID,CUIs\n{A},{CT}\n{A},{CT}\n{B},{CT}\n", 3, "appears again (first on line 2)"),
    (f"ID,CUIs\n{A},{CT}\n{B},{CT}\nunknown_7,{CT}\n", 4, "not in the gold file"),
    (f"ID,CUIs\n{A}, {CT}\n{B},{CT}\n", 2, "CUIs field has leading or trailing spaces"),
    (f"ID,CUIs\n{A},{CT};\n{B},{CT}\n", 2, "empty CUI"),
    (f"ID,CUIs\n{A},{CT};;{CHEST}\n{B},{CT}\n", 2, "empty CUI"),
    (f"ID,CUIs\n{A},{CT}\n{B},c0817096\n", 3, "not a CUI"),
    (f"ID,CUIs\n{A},{CT}\n{B},CUI123\n", 3, "not a CUI"),
    (f"ID,CUIs\n{A},{CT} {CHEST}\n{B},{CT}\n", 2, "not a CUI"),
    (f"ID,CUIs\n{A},{CT};{CHEST};{CT}\n{B},{CT}\n", 2, f"more than once: {CT}"),
    (f"ID,CUIs\n{A},{';'.join(f'C{i}' for i in range(101))}\n{B},{CT}\n", 2, "101 CUIs; at most 100"),
    (f'ID,CUIs\n{A},"{CT}\n{B},{CT}\n', 2, "never closed"),
])
def test_each_concept_rule_has_a_failing_file(tmp_path, text, line, message):
    found = violations(write(tmp_path, text))
    assert any(ln == line and message in m for ln, m in found), found


def test_missing_ids_are_reported_for_the_whole_file(tmp_path):
    found = violations(write(tmp_path, f"ID,CUIs\n{A},{CT}\n"))
    assert found == [(None, f"1 of the 2 gold IDs have no row: {B}")]


def test_invalid_utf8_is_reported_on_its_line(tmp_path):
    path = write(tmp_path, b"ID,CUIs\n" + A.encode() + b",C0040405\n" + B.encode() + b"\xff,C1\n")
    assert (3, "not valid UTF-8 (byte 0xff); save the file as UTF-8") in violations(path)


def test_empty_concept_list_is_a_violation_only_under_the_2026_rule(tmp_path):
    path = write(tmp_path, f"ID,CUIs\n{A},\n{B},{CT}\n")
    assert violations(path) == []
    assert [ln for ln, _ in violations(path, allow_empty=False)] == [2]


def test_every_violation_is_reported_not_only_the_first(tmp_path):
    text = f"\ufeffID,CUIs\n{A},c1;C2;C2;\n\n{A},C3\nx, C4\n"
    found = violations(write(tmp_path, text))
    lines = [ln for ln, _ in found]
    assert lines == [1, 2, 2, 2, 3, 4, 5, 5, None]  # in file order, whole-file problems last
    assert len(found) == 9


def test_without_gold_ids_the_coverage_is_not_checked(tmp_path):
    path = write(tmp_path, f"ID,CUIs\nwhatever_1,{CT}\n")
    preds, found = check_concept_submission(path)
    assert found == [] and preds == {"whatever_1": [CT]}


def test_empty_file_and_header_only_file(tmp_path):
    assert violations(write(tmp_path, ""), gold_ids=None)[0][1].startswith("the file is empty")
    assert violations(write(tmp_path, "ID,CUIs\n")) == [(None, f"2 of the 2 gold IDs have no row: {A}, {B}")]


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(MedcapError, match="not found"):
        validate_concept_submission(tmp_path / "nope.csv")
    with pytest.raises(MedcapError, match="expected a submission file, found a folder"):
        validate_concept_submission(tmp_path)


# ---------------------------------------------------------------------------------------
# Caption submissions
# ---------------------------------------------------------------------------------------

def test_caption_writer_quotes_every_caption_and_keeps_commas_and_quotes(tmp_path):
    captions = {A: 'CT of the chest, axial view; "arrow" marks the mass', B: ""}
    path = write_caption_submission(tmp_path / "run.csv", captions, gold_ids=IDS)
    text = path.read_text(encoding="utf-8")
    assert text == f'ID,Caption\n{A},"CT of the chest, axial view; ""arrow"" marks the mass"\n{B},""\n'
    assert read_caption_submission(path, IDS) == captions
    with open(path, newline="", encoding="utf-8") as f:  # any CSV reader gets the same
        assert dict(list(csv.reader(f))[1:]) == captions


def test_caption_writer_turns_line_breaks_into_spaces_and_trims(tmp_path):
    path = write_caption_submission(tmp_path / "run.csv", {A: "  Chest X-ray.\nSecond line\r\n", B: "ok"})
    assert read_caption_submission(path) == {A: "Chest X-ray. Second line", B: "ok"}
    assert path.read_bytes().count(b"\n") == 3


def test_caption_writer_writes_utf8_without_bom(tmp_path):
    path = write_caption_submission(tmp_path / "run.csv", {A: "Ultraschall der Schilddrüse – 5 mm", B: "x"})
    data = path.read_bytes()
    assert data.startswith(b"ID,Caption\n") and "Schilddrüse".encode() in data


def test_caption_writer_refuses_bad_ids_and_missing_ids(tmp_path):
    with pytest.raises(MedcapError, match="image ID"):
        write_caption_submission(tmp_path / "a.csv", {"a\nb": "x"})
    with pytest.raises(MedcapError, match="gold IDs have no row"):
        write_caption_submission(tmp_path / "b.csv", {A: "x"}, gold_ids=IDS)
    assert not (tmp_path / "b.csv").exists()


@pytest.mark.parametrize("text, line, message", [
    (f'\ufeffID,Caption\n{A},"x"\n{B},"y"\n', 1, "byte-order mark"),
    (f'ID,Captions\n{A},"x"\n{B},"y"\n', 1, "header must be exactly ID,Caption"),
    (f'{A},"x"\n{B},"y"\n', 1, "missing header"),
    (f'ID,Caption\n{A},"x"\n\n{B},"y"\n', 3, "blank line"),
    (f'ID,Caption\n{A},chest, axial\n{B},"y"\n', 2, "expected 2 fields"),
    (f'ID,Caption\n{A}\n{B},"y"\n', 2, "expected 2 fields"),
    (f'ID,Caption\n{A},"chest, axial" view\n{B},"y"\n', 2, "comma but is not enclosed in double quotes"),
    (f'ID,Caption\n{A},"first line\nsecond line"\n{B},"y"\n', 2, "line break"),
    (f'ID,Caption\n{A},"x"\n{A},"x"\n{B},"y"\n', 3, "appears again"),
    (f'ID,Caption\n{A},"x"\n{B},"y"\nzzz,"z"\n', 4, "not in the gold file"),
])
def test_each_caption_rule_has_a_failing_file(tmp_path, text, line, message):
    found = violations(write(tmp_path, text), kind="captions")
    assert any(ln == line and message in m for ln, m in found), found


def test_caption_line_numbers_count_the_lines_of_multi_line_captions(tmp_path):
    text = f'ID,Caption\n{A},"a\nb\nc"\n{B}," y"\n'
    found = violations(write(tmp_path, text), kind="captions", edition=2025)  # 2025: no spaces at the ends
    assert [ln for ln, _ in found] == [2, 5]


def test_unquoted_caption_without_comma_and_empty_caption_are_valid(tmp_path):
    path = write(tmp_path, f"ID,Caption\n{A},Chest X-ray\n{B},\n")
    assert violations(path, kind="captions") == []
    assert read_caption_submission(path) == {A: "Chest X-ray", B: ""}


def test_gold_files_with_a_bom_are_read_but_submissions_with_a_bom_are_refused(tmp_path):
    # The organisers' gold reader tolerates a BOM (it only skips a row containing "ID");
    # their submission checker does not (the header becomes "\ufeffID").
    from medcap.data.csvio import read_captions_csv

    gold = write(tmp_path, f'\ufeffID,Caption\n{A},"x"\n{B},"y"\n', "gold.csv")
    assert set(read_captions_csv(gold)) == set(IDS)
    sub = write(tmp_path, f'\ufeffID,Caption\n{A},"x"\n{B},"y"\n', "sub.csv")
    assert violations(sub, kind="captions") == [(1, violations(sub, kind="captions")[0][1])]
    with pytest.raises(MedcapError, match="byte-order mark"):
        read_caption_submission(sub)
