"""Caption text repair and post-processing (medcap.text): no torch, milliseconds."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medcap.metrics.captions import preprocess_caption
from medcap.text import (
    ACRONYMS,
    normalize_whitespace,
    postprocess_caption,
    repair_wordpiece_spacing,
    restore_acronyms,
)

# (what a BERT WordPiece decode gives, what the caption said)
DECODE_CASES = [
    ("a 2. 3 cm nodule", "a 2.3 cm nodule"),
    ("a 2 . 3 cm nodule", "a 2.3 cm nodule"),
    ("measuring 10. 25 x 3. 5 mm", "measuring 10.25 x 3.5 mm"),
    ("plain x - ray of the knee", "plain x-ray of the knee"),
    ("t2 - weighted image", "t2-weighted image"),
    ("well - defined , non - enhancing mass", "well-defined, non-enhancing mass"),
    ("ct - guided biopsy", "ct-guided biopsy"),
    ("pet / ct fusion", "pet/ct fusion"),
    ("t1 / t2 mismatch", "t1/t2 mismatch"),
    ("18f - fdg uptake", "18f-fdg uptake"),
    ("mass ( arrow ) in the liver", "mass (arrow) in the liver"),
    ("mass (arrow ) in the liver", "mass (arrow) in the liver"),
    ("lesion [ asterisk ]", "lesion [asterisk]"),
    ("the patient ' s left knee", "the patient's left knee"),
    ("crohn ' s disease", "crohn's disease"),
    ("don ' t", "don't"),
    ("50 % stenosis", "50% stenosis"),
    ("stenosis of 50 %.", "stenosis of 50%."),
    ("ratio 1 : 2", "ratio 1:2"),
    ("findings : a mass", "findings: a mass"),
    ("a 90 ° angle", "a 90° angle"),
    ("the lung .", "the lung."),
    ("first , second ; third !", "first, second; third!"),
    ("is it benign ?", "is it benign?"),
    ('the " target sign " is seen', 'the "target sign" is seen'),
    ("days 10 \u2013 20", "days 10\u201320"),
    ("covid - 19 pneumonia", "covid-19 pneumonia"),
    ("figures 1, 2 and 3", "figures 1, 2 and 3"),          # a list stays a list
    ("  extra   spaces\n and\tbreaks ", "extra spaces and breaks"),
    ("##tory of cough", "tory of cough"),                  # a piece generated first has no word to join
    ("", ""),
    ("already fine: a 2.3 cm x-ray (ap).", "already fine: a 2.3 cm x-ray (ap)."),
]


@pytest.mark.parametrize("decoded, original", DECODE_CASES)
def test_wordpiece_decode_spacing_is_repaired(decoded, original):
    assert repair_wordpiece_spacing(decoded) == original


@pytest.mark.parametrize("decoded, original", [c for c in DECODE_CASES if c[1]])
def test_repair_restores_the_official_preprocessed_words(decoded, original):
    # The reason for the repair: the evaluator's preprocessing sees the original words again.
    assert preprocess_caption(repair_wordpiece_spacing(decoded)).split() == preprocess_caption(original).split()


def test_repair_changes_nothing_that_is_already_correct():
    for _, original in DECODE_CASES:
        assert repair_wordpiece_spacing(original) == original


@pytest.mark.parametrize("text, expected", [
    ("axial ct of the chest", "axial CT of the chest"),
    ("mri and pet/ct", "MRI and PET/CT"),
    ("ct-guided biopsy on t2-weighted mri", "CT-guided biopsy on T2-weighted MRI"),
    ("plain x-ray and x-rays", "plain X-ray and X-rays"),
    ("fmri study", "fMRI study"),
    ("Ct scan", "CT scan"),
    ("(ct)", "(CT)"),
    ("ct.", "CT."),
])
def test_acronyms_are_restored_as_whole_words(text, expected):
    assert restore_acronyms(text) == expected


@pytest.mark.parametrize("word", ["fracture", "doctor", "spectrum", "impetus", "carpet", "actual", "octave",
                                  "impact", "dwindle", "mrs", "tap", "apex", "pace", "hue", "thumb", "spa",
                                  "ctx", "xct", "ct2", "2ct", "ct_a", "attempt", "petals", "cts"])
def test_acronyms_never_change_letters_inside_words(word):
    # The authors' post-processing replaced substrings: "fracture" -> "fraCTure" (REFERENCE §2).
    text = f"a {word} here"
    assert restore_acronyms(text) == text
    assert postprocess_caption(text) == text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["fracture", "ct", "mri", "spectrum", "the", "2", ".", "-", "x", "ray", "(", ")",
                                 "impetus", "pet", "carpet", ",", "doctor", "t2", "weighted", "'", "s", "/", "%"]),
                max_size=12))
def test_postprocessing_only_changes_spaces_and_the_case_of_whole_acronyms(tokens):
    text = " ".join(tokens)
    out = postprocess_caption(text)
    # Same characters in the same order, apart from spaces and letter case ...
    assert out.replace(" ", "").lower() == text.replace(" ", "").lower()
    # ... and a word with an upper-case letter is a whole acronym (or the X of X-ray).
    for word in re.findall(r"\w+", out):
        if word != word.lower():
            assert word.lower() in ACRONYMS or word == "X"


def test_whitespace_is_normalised():
    assert normalize_whitespace(" a\n\n b\t c  ") == "a b c"


def test_postprocessing_can_leave_acronyms_alone():
    assert postprocess_caption("axial ct , 2. 3 cm", acronyms=False) == "axial ct, 2.3 cm"
    assert postprocess_caption("axial ct , 2. 3 cm") == "axial CT, 2.3 cm"


def test_custom_acronym_table():
    assert restore_acronyms("us of the liver", {"US": "US"}) == "US of the liver"
    assert restore_acronyms("thus", {"us": "US"}) == "thus"
