"""Caption text after decoding: undo WordPiece spacing, normalise whitespace, restore acronyms.

A BERT WordPiece tokenizer (BLIP's, and the one :func:`medcap.models.captioner.train_wordpiece`
builds) splits every punctuation mark into its own token, and decoding joins tokens with
spaces: "2.3" comes back as "2. 3" (or "2 . 3"), "x-ray" as "x - ray", "(arrow)" as
"( arrow )". That changes the official scores: the evaluator lower-cases, turns digit runs
into "number" and deletes ASCII punctuation (REFERENCE §4), so "2.3" is one word and "2. 3" two,
"x-ray" is "xray" and "x - ray" is "x" + "ray". :func:`repair_wordpiece_spacing` puts the
characters back together.

Acronyms are restored only as whole words (:func:`restore_acronyms`): the authors' code
replaced substrings, so "fracture" became "fraCTure" (REFERENCE §2); here a letter inside a word
is never changed.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# Lower-case form -> display form. Only words that are not also ordinary English words
# ("us" for ultrasound is left out on purpose).
ACRONYMS: dict[str, str] = {a.lower(): a for a in (
    "CT", "CTA", "HRCT", "CBCT", "CECT", "NCCT", "MRI", "fMRI", "MR", "MRA", "MRCP", "PET", "SPECT",
    "OCT", "DSA", "ERCP", "FDG", "SUV", "ECG", "EKG", "EEG", "DWI", "ADC", "FLAIR", "STIR", "T1", "T2",
    "AP", "PA", "CXR", "KUB", "TTE", "TEE", "IVUS", "MIP", "MPR", "HU", "IVC", "SVC", "CSF", "CNS",
    "CBD", "LAD", "RCA", "LCX", "COVID-19", "X-ray", "X-rays",
)}

_WS = re.compile(r"\s+")
_CLOSING = re.compile(r" +(?=[.,;:!?)\]}%])")            # "lung ." -> "lung."   "50 %" -> "50%"
_OPENING = re.compile(r"(?<=[(\[{]) +")                   # "( arrow" -> "(arrow"
_JOINERS = re.compile(r"(?<=[^\W_]) ?([-\u2013/]) ?(?=[^\W_])")  # "x - ray" "t1 / t2" "10 \u2013 20"
_DECIMAL = re.compile(r"(?<=\d)([.:]) (?=\d)")            # "2. 3" -> "2.3"   "1: 2" -> "1:2"
_APOSTROPHE = re.compile(r"(?<=[^\W_]) ?' ?(?=(?:s|t|d|m|ll|re|ve)\b)", re.IGNORECASE)  # "patient ' s"
_DEGREE = re.compile(r"(?<=\d) +(?=\u00b0)")                # "90 \u00b0" -> "90\u00b0"
_ORPHAN_PIECE = re.compile(r"(?<!\S)##(?=\w)")            # a continuation piece left at a word start


def normalize_whitespace(text: str) -> str:
    """Collapse every run of whitespace (line breaks included) into one space; strip the ends."""
    return _WS.sub(" ", text).strip()


def _join_quotes(text: str) -> str:
    """' " word " ' -> ' "word" ': straight double quotes alternate between opening and closing."""
    parts = text.split('"')
    if len(parts) < 3 or len(parts) % 2 == 0:  # no pair, or an odd number of quotes: leave it
        return text
    for i in range(1, len(parts), 2):          # parts[i] lies between quote i (opening) and i+1
        parts[i] = parts[i].strip(" ")
    return '"'.join(parts)


def repair_wordpiece_spacing(text: str) -> str:
    """Undo the spaces a WordPiece decode puts around punctuation.

    >>> repair_wordpiece_spacing("a 2. 3 cm x - ray ( arrow ) of the patient ' s knee , 50 %")
    "a 2.3 cm x-ray (arrow) of the patient's knee, 50%"

    The rules are heuristics for caption text: a hyphen, en dash or slash between two word
    characters is joined ("t2 - weighted" -> "t2-weighted"), so a spaced dash between words
    ("lesion - arrow") is joined too; a comma between digits is left alone ("1, 2" is a list
    far more often than a thousands separator).
    """
    text = normalize_whitespace(_ORPHAN_PIECE.sub("", text))
    text = _CLOSING.sub("", text)
    text = _OPENING.sub("", text)
    text = _JOINERS.sub(r"\1", text)
    text = _DECIMAL.sub(r"\1", text)
    text = _APOSTROPHE.sub("'", text)
    text = _DEGREE.sub("", text)
    return _join_quotes(text)


def _acronym_pattern(words: Iterable[str]) -> re.Pattern:
    # Longest first so that "x-rays" wins over "x-ray"; the look-arounds keep letters, digits
    # and underscores on either side out, which is what "only whole words" means here.
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


_DEFAULT_PATTERN = _acronym_pattern(ACRONYMS)


def restore_acronyms(text: str, acronyms: Mapping[str, str] | None = None) -> str:
    """Write known acronyms in their usual case, whole words only ("ct" -> "CT", "fracture" kept)."""
    table = ACRONYMS if acronyms is None else {k.lower(): v for k, v in acronyms.items()}
    pattern = _DEFAULT_PATTERN if acronyms is None else _acronym_pattern(table)
    if not table:
        return text
    return pattern.sub(lambda m: table[m.group(0).lower()], text)


def postprocess_caption(text: str, acronyms: bool = True) -> str:
    """Everything a decoded caption goes through: spacing repair, whitespace, acronyms."""
    text = repair_wordpiece_spacing(text)
    return restore_acronyms(text) if acronyms else text
