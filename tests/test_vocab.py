"""ConceptVocabulary: every training CUI predictable, unknown CUIs reported, JSON round trip."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medcap.data import ConceptVocabulary
from medcap.errors import MedcapError

TRAIN = {"a": ["C0040405", "C0817096"], "b": ["c0040405 "], "c": ["C0024485", "C9999999"], "d": []}
NAMES = {"C0040405": "X-Ray Computed Tomography", "C0817096": "Chest", "C0000726": "Abdomen"}


def test_every_training_cui_is_in_the_vocabulary_even_without_a_name():
    v = ConceptVocabulary.from_concepts(TRAIN, NAMES)
    assert v.cuis == ["C0024485", "C0040405", "C0817096", "C9999999"]
    assert v.names == {"C0040405": "X-Ray Computed Tomography", "C0817096": "Chest"}
    assert v.name("C9999999") == "C9999999" and v.name("c0817096") == "Chest"
    assert v.counts == {"C0024485": 1, "C0040405": 2, "C0817096": 1, "C9999999": 1}
    assert "c0040405" in v and "C0000726" not in v and len(v) == 4


def test_min_count_keeps_only_frequent_concepts():
    assert ConceptVocabulary.from_concepts(TRAIN, min_count=2).cuis == ["C0040405"]
    with pytest.raises(MedcapError, match="vocabulary would be empty"):
        ConceptVocabulary.from_concepts(TRAIN, min_count=3)
    with pytest.raises(MedcapError, match="at least 1"):
        ConceptVocabulary.from_concepts(TRAIN, min_count=0)


def test_encode_gives_a_multi_hot_vector_and_reports_unknown_cuis():
    v = ConceptVocabulary.from_concepts(TRAIN)
    vec, unknown = v.encode(["c0817096", "C0000726", "C0040405", "C0000726"])
    assert vec.dtype == np.float32 and vec.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert unknown == ["C0000726"]


def test_encode_many_stacks_rows_and_collects_unknowns():
    v = ConceptVocabulary.from_concepts(TRAIN)
    m, unknown = v.encode_many([["C0024485"], ["C1", "C0817096"], []])
    assert m.shape == (3, 4) and m.sum(axis=1).tolist() == [1.0, 1.0, 0.0]
    assert unknown == ["C1"]
    assert v.encode_many([])[0].shape == (0, 4)


def test_decode_takes_indices_or_a_boolean_mask():
    v = ConceptVocabulary.from_concepts(TRAIN)
    assert v.decode([2, 0]) == ["C0817096", "C0024485"]
    assert v.decode(np.array([True, False, False, True])) == ["C0024485", "C9999999"]
    with pytest.raises(IndexError):
        v.decode([4])


def test_save_and_load_round_trip_in_a_model_folder(tmp_path):
    v = ConceptVocabulary.from_concepts(TRAIN, NAMES, min_count=1)
    path = v.save(tmp_path / "model")
    assert path == tmp_path / "model" / "concepts.json"
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["concepts.json"]  # no temporary left
    w = ConceptVocabulary.load(tmp_path / "model")
    assert w == v and w.counts == v.counts and w.cuis == v.cuis
    assert ConceptVocabulary.load(path) == v


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(MedcapError, match="concepts.json: no concept vocabulary"):
        ConceptVocabulary.load(tmp_path)
    (tmp_path / "concepts.json").write_text('{"format": "medcap-concept-vocabulary",\n "cuis": [}')
    with pytest.raises(MedcapError, match=r"concepts.json:2: not a valid JSON concept vocabulary"):
        ConceptVocabulary.load(tmp_path)
    (tmp_path / "concepts.json").write_text(json.dumps({"labels": ["C1"]}))
    with pytest.raises(MedcapError, match="not a concept vocabulary"):
        ConceptVocabulary.load(tmp_path)
    (tmp_path / "concepts.json").write_text(json.dumps({"format": "medcap-concept-vocabulary", "cuis": ["X1"]}))
    with pytest.raises(MedcapError, match="malformed CUI 'X1'"):
        ConceptVocabulary.load(tmp_path)
