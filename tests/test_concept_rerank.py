"""Captions chosen to agree with the concept detector (medcap.inference.rerank) and GeM pooling."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import train_tiny_models
from medcap.inference.rerank import caption_name_matcher, choose_weight, concept_agreement, concept_matcher, pick
from medcap.methods.consistent import ConsistentRetrieval, consensus_scores, retrieval_candidates, sentence_prefixes
from medcap.metrics.textscores import rouge1_tokens, unigram_f1

CT, MRI, CHEST, ABDOMEN = "C0040405", "C0024485", "C0817096", "C0000726"


@pytest.fixture(scope="module")
def matcher():
    return concept_matcher({})            # the synthetic catalogue's names and synonyms


def test_agreement_is_the_f1_of_named_and_detected_concepts(matcher):
    m, nameable = matcher
    assert concept_agreement("CT of the chest.", [CT, CHEST], m, nameable) == 1.0
    assert concept_agreement("MRI of the chest.", [CT, CHEST], m, nameable) == pytest.approx(0.5)
    assert concept_agreement("An image.", [CT], m, nameable) == 0.0
    assert concept_agreement("An image.", ["C9999999"], m, nameable) == 1.0   # nothing nameable either side


def test_reranking_picks_the_beam_that_agrees_with_the_detector(matcher):
    m, nameable = matcher
    beams = ["MRI of the abdomen.", "CT of the chest.", "MRI of the chest."]
    beam_scores = [1.0, 0.0, 0.5]          # the beam search prefers the first
    assert pick(beams, [CT, CHEST], beam_scores, 1.0, m, nameable) == 1
    assert pick(beams, [CT, CHEST], beam_scores, 0.0, m, nameable) == 0        # weight 0: the beam score alone
    assert pick(beams, [MRI, ABDOMEN], beam_scores, 0.5, m, nameable) == 0


def test_consensus_prefers_the_caption_the_others_share():
    s = consensus_scores(["ct of the chest", "ct of the chest with a nodule", "mri of the knee"])
    assert s.argmax() in (0, 1) and s[2] == s.min()
    assert unigram_f1(rouge1_tokens("CT chest"), rouge1_tokens("ct, CHEST!")) == 1.0


def test_weight_is_chosen_by_rouge_on_the_given_validation_captions(matcher):
    m, nameable = matcher
    cands = [["MRI of the abdomen.", "CT of the chest."]] * 3
    other = [[1.0, 0.0]] * 3
    w, table = choose_weight(cands, other, [[CT, CHEST]] * 3, ["CT of the chest."] * 3, m, nameable)
    assert w > 0.5 and table[w] == 1.0 and table[0.0] < 1.0


def test_consistent_retrieval_fits_on_validation_and_excludes_the_image_itself(matcher):
    m, nameable = matcher
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 4))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    caps = [f"caption {i} CT of the chest." if i % 2 else f"caption {i} MRI of the abdomen." for i in range(6)]
    method = ConsistentRetrieval(emb, caps, m, nameable)
    own = method.candidates(emb, k=2, exclude_self=True)
    assert all(caps[i] not in own[i] for i in range(6))
    method.fit(emb, [[CT, CHEST]] * 6, ["CT of the chest."] * 6, ks=(1, 3), weights=(0.0, 1.0))
    assert method.k == 3 and method.weight == 1.0
    assert all("CT of the chest" in c for c in method.predict(emb, [[CT, CHEST]] * 6))


def _one_query_three_neighbours():
    q = np.array([[1.0, 0.0]])
    train = np.array([[1.0, 0.1], [1.0, 0.5], [1.0, 0.6]])            # nearest first
    return q, train / np.linalg.norm(train, axis=1, keepdims=True)


def test_the_guard_keeps_choices_whose_guard_score_is_not_below_the_nearest_neighbours(matcher):
    m, nameable = matcher
    q, train = _one_query_three_neighbours()
    caps = ["a nodule", "the chest of the patient", "the chest of the patient"]
    gold = ["the chest of the patient with a nodule"]
    free = ConsistentRetrieval(train, caps, m, nameable).fit(q, [[]], gold, ks=(1, 3), weights=(0.0,))
    assert free.k == 3 and free.predict(q, [[]]) == ["the chest of the patient"]   # more ROUGE-1
    seen = []

    def names_the_nodule(golds, preds):                              # e.g. the approximate UMLS F1
        seen.extend(preds)
        return [1.0 if "nodule" in p else 0.0 for p in preds]

    guarded = ConsistentRetrieval(train, caps, m, nameable).fit(q, [[]], gold, ks=(3,), weights=(0.0,),
                                                                  guard=names_the_nodule)
    assert guarded.k == 1 and guarded.predict(q, [[]]) == ["a nodule"]        # k = 1 is always allowed
    assert sorted(seen) == sorted(set(caps))                           # each distinct candidate scored once
    row = next(r for r in guarded.table if r["k"] == 3)
    assert row["weight"] is None and row["guard_floor"] == 1.0               # nothing at k = 3 kept the floor


def test_with_a_guard_the_choice_maximises_rouge_plus_the_guard_score(matcher):
    m, nameable = matcher
    q = np.array([[1.0, 0.0]])
    train = np.array([[1.0, 0.1], [1.0, 0.5], [1.0, 0.6], [1.0, 0.7]])          # nearest first
    train /= np.linalg.norm(train, axis=1, keepdims=True)
    caps = ["MRI of the knee.", "CT of the chest.", "the chest of the patient", "the chest of the patient"]
    gold = ["the chest of the patient on CT"]

    def names_ct(golds, preds):
        return [1.0 if "CT" in p else 0.0 for p in preds]

    kw = dict(ks=(1, 4), weights=(0.0, 1.0))
    plain = ConsistentRetrieval(train, caps, m, nameable).fit(q, [[CT, CHEST]], gold, **kw)
    assert plain.weight == 0.0 and plain.predict(q, [[CT, CHEST]]) == ["the chest of the patient"]  # ROUGE-1 0.83
    both = ConsistentRetrieval(train, caps, m, nameable).fit(q, [[CT, CHEST]], gold, guard=names_ct, **kw)
    assert both.weight == 1.0 and both.predict(q, [[CT, CHEST]]) == ["CT of the chest."]  # 0.73 + 1 > 0.83 + 0
    assert both.valid_score == pytest.approx(8 / 11 + 1.0)
    rouge_only = ConsistentRetrieval(train, caps, m, nameable, guard_weight=0.0)
    assert rouge_only.fit(q, [[CT, CHEST]], gold, guard=names_ct, **kw).weight == 0.0   # the guard only filters


def test_sentence_prefixes():
    caption = "CT of the chest. Fig. 2 shows the nodule. Image courtesy of Dr. Smith."
    assert sentence_prefixes(caption) == ["CT of the chest.", "CT of the chest. Fig. 2 shows the nodule.",
                                          "CT of the chest. Fig. 2 shows the nodule. Image courtesy of Dr.", caption]
    assert sentence_prefixes("  one sentence only ") == ["one sentence only"]


def test_a_leading_sentence_the_neighbours_share_beats_their_full_captions(matcher):
    neighbours = ["CT of the chest. Image courtesy of the radiology department.",
                  "CT of the chest. The patient recovered well.",
                  "CT of the chest showing a nodule."]
    cands, cons = retrieval_candidates(neighbours)
    assert cands == ["CT of the chest.", neighbours[0], "CT of the chest.", neighbours[1], neighbours[2]]
    assert cands[int(cons.argmax())] == "CT of the chest."
    # a candidate is compared with the *other* neighbours' captions only
    others = [unigram_f1(rouge1_tokens(cands[0]), rouge1_tokens(n)) for n in neighbours[1:]]
    assert cons[0] == pytest.approx(np.mean(others))
    full, full_cons = retrieval_candidates(neighbours, prefixes=False)
    assert full == neighbours and np.allclose(full_cons, consensus_scores(neighbours))
    assert retrieval_candidates(neighbours[:1]) == (neighbours[:1], pytest.approx([0.5]))   # k = 1: the NN caption

    m, nameable = matcher
    q = np.array([[1.0, 0.0]])
    train = np.array([[1.0, 0.1], [1.0, 0.5], [1.0, 0.6]])
    method = ConsistentRetrieval(train / np.linalg.norm(train, axis=1, keepdims=True), neighbours, m, nameable)
    method.fit(q, [[CT, CHEST]], ["CT of the chest with contrast."], ks=(3,), weights=(0.0,))
    assert method.predict(q, [[CT, CHEST]]) == ["CT of the chest."]


def test_caption_name_matcher_counts_concepts_the_way_the_caption_evaluation_finds_them():
    names = {CT: "CT", CHEST: "Chest", ABDOMEN: "Abdomen"}
    matcher, nameable = caption_name_matcher(names, ["CT of the chest.", "An image."])
    assert nameable == {CT, CHEST}                                   # no caption names the abdomen
    assert caption_name_matcher(names, ["CT of the chest."], vocabulary=[CT])[1] == {CT}
    assert concept_agreement("CT of the chest.", [CT, CHEST], matcher, nameable) == 1.0
    assert concept_agreement("Computed tomography of the chest.", [CT, CHEST], matcher, nameable) == 2 / 3


def test_gem_pooling_option():
    import torch

    from medcap.errors import MedcapError
    from medcap.models.concept_detector import ConceptDetector, DetectorConfig, GeM

    f = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(GeM(1.0, learnable=False)(f), f.mean(dim=(2, 3)))
    assert (GeM(8.0)(f) > f.mean(dim=(2, 3))).all()              # toward max pooling
    model = ConceptDetector(DetectorConfig(num_classes=5, backbone="test_resnet", global_pool="gem", gem_p=2.0))
    model.forward(torch.rand(2, 3, 32, 32)).sum().backward()
    assert model.head.global_branch.pool.p.grad is not None
    fixed = ConceptDetector(DetectorConfig(num_classes=5, backbone="test_resnet", global_pool="gem",
                                           gem_learnable=False))
    assert not fixed.head.global_branch.pool.p.requires_grad
    with pytest.raises(MedcapError, match="global_pool"):
        DetectorConfig(num_classes=5, global_pool="max")


@pytest.mark.slow  # trains the tiny models when no other test file did
def test_predict_captions_rerank_keeps_one_of_the_beams(tmp_path_factory, synth_small, tmp_path, cli):
    from medcap.data.images import list_images, load_image
    from medcap.inference.captions import predict_captions
    from medcap.inference.rerank import beam_candidates
    from medcap.models.captioner import Captioner

    models = train_tiny_models(synth_small, tmp_path_factory.getbasetemp() / "medcap-tiny-models")
    captioner = Captioner.from_pretrained(models.captions)
    files = sorted(list_images(synth_small / "test"))[:3]
    cands = beam_candidates(captioner, [load_image(f) for f in files], None, num_beams=3, batch_size=2)
    assert len(cands) == 3 and all(len(b) == 3 and s.max() == 1.0 for b, s in cands)
    concepts = {f.stem: ["C0040405"] for f in files}
    top = predict_captions(captioner, files, rerank="concepts", rerank_weight=0.0, num_beams=3, concepts=concepts)
    assert [top[f.stem] for f in files] == [b[int(s.argmax())] for b, s in cands]
    agreeing = predict_captions(captioner, files, rerank="concepts", rerank_weight=1.0, num_beams=3,
                                concepts=concepts)
    assert all(agreeing[f.stem] in b for f, (b, _) in zip(files, cands, strict=True))
    sub = tmp_path / "c.csv"
    (tmp_path / "concepts.csv").write_text("ID,CUIs\n" + "".join(f"{f.stem},C0040405\n" for f in files))
    images = [a for f in files for a in ("--images", f)]
    rc, _, err = cli("predict", "captions", "--model", models.captions, *images, "--out", sub,
                     "--rerank", "concepts", "--beams", "3", "--concepts", tmp_path / "concepts.csv")
    assert rc == 0, err
    assert len(sub.read_text().splitlines()) == 4
    rc, _, err = cli("predict", "captions", "--model", models.captions, *images, "--out", sub,
                     "--rerank", "words", "--concepts", tmp_path / "concepts.csv")
    assert rc != 0 and "--rerank" in err
