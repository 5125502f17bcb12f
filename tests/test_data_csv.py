"""The ImageCLEF CSV readers: header spellings, quoting, real line numbers, every bad row."""
from __future__ import annotations

import pytest

from medcap.data import read_captions_csv, read_concepts_csv, read_cui_mapping, scan_captions_csv, scan_concepts_csv
from medcap.errors import MedcapError


def _write(tmp_path, text: str | bytes, name="x.csv"):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return p


def _error(fn, path) -> str:
    with pytest.raises(MedcapError) as e:
        fn(path)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------- good files
def test_concepts_are_upper_cased_stripped_in_file_order_without_repeats(tmp_path):
    p = _write(tmp_path, "ID,CUIs\nimg_1, c0040405 ;C0817096;c0040405;\nimg_2,C0024485\n")
    assert read_concepts_csv(p) == {"img_1": ["C0040405", "C0817096"], "img_2": ["C0024485"]}


@pytest.mark.parametrize("header", ["ID,CUIs", "id,cuis", "image_id,concepts", "Image ID,CUIs", "\ufeffID,CUIs", None])
def test_concept_header_spellings_and_no_header_are_accepted(tmp_path, header):
    body = "ImageCLEFmedical_Caption_2025_train_0,C0040405\n"
    p = _write(tmp_path, (header + "\n" if header else "") + body)
    assert read_concepts_csv(p) == {"ImageCLEFmedical_Caption_2025_train_0": ["C0040405"]}


def test_utf8_bom_and_crlf_line_endings_are_read(tmp_path):
    p = _write(tmp_path, "\ufeffID,Caption\r\na1,\"Left lung, café\"\r\na2,second\r\n")
    assert read_captions_csv(p) == {"a1": "Left lung, café", "a2": "second"}


def test_an_image_with_an_empty_concept_list_is_kept(tmp_path):
    p = _write(tmp_path, "ID,CUIs\na1,\na2,C0040405\n")
    assert read_concepts_csv(p) == {"a1": [], "a2": ["C0040405"]}


def test_captions_keep_quoted_commas_quotes_and_newlines(tmp_path):
    p = _write(tmp_path, 'ID,Caption\na1,"CT, axial: a ""ground-glass"" opacity\nin the right\nlung."\na2,plain\n')
    assert read_captions_csv(p) == {"a1": 'CT, axial: a "ground-glass" opacity\nin the right\nlung.', "a2": "plain"}


def test_unquoted_caption_with_commas_is_read_whole(tmp_path):
    p = _write(tmp_path, "ID,Caption\na1,CT scan, axial view, contrast\n")
    assert read_captions_csv(p) == {"a1": "CT scan, axial view, contrast"}


def test_blank_lines_and_trailing_empty_fields_are_ignored(tmp_path):
    p = _write(tmp_path, "ID,CUIs\n\na1,C0040405,,\n\n")
    assert read_concepts_csv(p) == {"a1": ["C0040405"]}


def test_cui_mapping_reads_quoted_names_and_normalises_cuis(tmp_path):
    p = _write(tmp_path, 'CUI,Canonical name\nc0040405,"X-Ray Computed Tomography"\nC0034069,"Fibrosis, pulmonary"\n')
    assert read_cui_mapping(p) == {"C0040405": "X-Ray Computed Tomography", "C0034069": "Fibrosis, pulmonary"}


# --------------------------------------------------------------------------- bad rows: file and real line
def test_row_with_one_field_names_file_line_and_expected_form(tmp_path):
    p = _write(tmp_path, "ID,CUIs\na1,C0040405\na2\n")
    assert _error(read_concepts_csv, p) == f"{p}:3: expected 2 fields (ID,CUIs), found 1: 'a2'"


def test_cuis_separated_by_commas_are_refused_with_a_hint(tmp_path):
    p = _write(tmp_path, "ID,CUIs\na1,C0040405,C0817096\n")
    assert _error(read_concepts_csv, p) == (f"{p}:2: expected 2 fields (ID,CUIs), found 3; "
                                            "separate CUIs with ';', not ','")


def test_malformed_cui_names_the_cui_and_the_expected_form(tmp_path):
    p = _write(tmp_path, "ID,CUIs\na1,C0040405;X12;C12a\n")
    msg = _error(read_concepts_csv, p)
    assert msg.startswith(f"{p}:2: malformed CUI 'X12', 'C12A'; expected 'C' followed by digits")

    p = _write(tmp_path, "ID,CUIs\na1," + ";".join(f"X{i}" for i in range(100)) + "\n")
    assert _error(read_concepts_csv, p).startswith(f"{p}:2: malformed CUI 'X0', 'X1', 'X2', 'X3', 'X4' and 95 more; ")


def test_duplicate_id_names_the_line_of_the_first(tmp_path):
    p = _write(tmp_path, "ID,CUIs\na1,C1\na2,C2\na1,C3\n")
    assert _error(read_concepts_csv, p) == f"{p}:4: duplicate ID 'a1' (first on line 2)"


def test_empty_caption_and_empty_id_are_errors(tmp_path):
    p = _write(tmp_path, 'ID,Caption\na1,"  "\n')
    assert _error(read_captions_csv, p) == f"{p}:2: empty caption"
    p = _write(tmp_path, "ID,Caption\n ,text\n", "y.csv")
    assert _error(read_captions_csv, p) == f"{p}:2: empty key; expected ID,Caption"


def test_line_numbers_count_the_lines_of_multi_line_captions(tmp_path):
    # Rows 2-4 are one quoted caption; the bad row is on line 6 of the file.
    p = _write(tmp_path, 'ID,Caption\na1,"one\ntwo\nthree"\na2,"ok"\na3\n')
    assert _error(read_captions_csv, p).startswith(f"{p}:6: expected 2 fields")


def test_unterminated_quote_is_reported_at_the_line_it_opens(tmp_path):
    p = _write(tmp_path, 'ID,Caption\na1,fine\na2,"never closed\nmore text\n')
    assert _error(read_captions_csv, p) == (f"{p}:3: a quoted field starting on this line is never closed "
                                            "(missing '\"')")


def test_stray_quote_is_bad_csv_syntax_with_line(tmp_path):
    p = _write(tmp_path, 'ID,Caption\na1,"quoted" tail\n')
    assert _error(read_captions_csv, p).startswith(f"{p}:2: bad CSV syntax")


def test_non_utf8_file_names_the_line_of_the_bad_byte(tmp_path):
    p = _write(tmp_path, "ID,Caption\na1,fine\na2,caf\xe9 in latin-1\n".encode("latin-1"))
    assert _error(read_captions_csv, p) == (f"{p}:3: not UTF-8 text (byte 0xe9 in column 7); save the file as UTF-8")


def test_malformed_cui_in_the_mapping_is_an_error(tmp_path):
    p = _write(tmp_path, "CUI,Canonical name\nC0040405,CT\nCT,Computed tomography\n")
    assert _error(read_cui_mapping, p).startswith(f"{p}:3: malformed CUI 'CT'")


def test_missing_file_and_folder_are_clear_errors(tmp_path):
    assert _error(read_concepts_csv, tmp_path / "nope.csv") == f"{tmp_path / 'nope.csv'}: CSV file not found"
    assert _error(read_concepts_csv, tmp_path).endswith("expected a CSV file, found a folder")


# --------------------------------------------------------------------------- the collecting variant
def test_scan_collects_every_problem_and_keeps_the_readable_rows(tmp_path):
    text = ("ID,CUIs\n"
            "a1,C0040405\n"       # 2 ok
            "a2\n"                # 3 one field
            "a3,C1;BAD\n"         # 4 malformed CUI (row kept with C1)
            "a1,C2\n"             # 5 duplicate
            'a4,"C3\n'            # 6 unterminated quote to the end
            "a5,C4\n")
    table = scan_concepts_csv(_write(tmp_path, text))
    found = [(p.line, p.kind) for p in table.problems]
    assert found == [(3, "malformed_row"), (4, "malformed_cui"), (5, "duplicate_id"), (6, "malformed_row")]
    assert table.values == {"a1": ["C0040405"], "a3": ["C1"]}
    assert table.lines == {"a1": 2, "a3": 4}


def test_scan_reports_every_line_with_a_non_utf8_byte_and_goes_on(tmp_path):
    p = _write(tmp_path, "ID,Caption\na1,\xe9\na2,ok\na3,\xff\n".encode("latin-1"))
    table = scan_captions_csv(p)
    assert [(q.line, q.kind) for q in table.problems] == [(2, "bad_encoding"), (4, "bad_encoding")]
    assert table.values["a2"] == "ok"
