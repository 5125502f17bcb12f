"""Knowledge-guided, fact-checked captions: a post-hoc pass over ANY captioner's output.

The paper's captioner scored 16.72 on the UMLS concept F1 and its authors propose, as future
work, to "infuse external medical knowledge" and to add "a fact-checking module ... which would
validate generated statements against a trusted medical knowledge base" (paper section 7.2);
the captioning leaders use concept-guided decoding and retrieval-augmented captions (REFERENCE §6).
This module does both after decoding, so it composes with any captioner and any concept
detector:

1. **Extract** the concepts a caption names: dictionary matching at word boundaries
   (:class:`MentionMatcher`, the offline UMLS matcher :class:`~medcap.metrics.scorers.ConceptNameMatcher`
   given several names per concept and character spans). The knowledge base
   (:func:`knowledge_base`) holds the ``cui_mapping.csv`` canonical names, the synonyms of the
   built-in lexicon (:data:`medcap.factcheck.lexicon.LEXICON`) and two groups of mutually
   exclusive concepts: the 7 imaging modalities and the 8 body regions of the official
   secondary score (REFERENCE §4). A figure normally shows one modality (and mostly one region).
2. **Verify** each mention against the concept detector's probabilities (the JSON written by
   ``medcap predict concepts --json``): ``supported`` (the detector predicts it: probability at
   or above the model's threshold), ``contradicted`` (a modality / region the detector rejects
   while it is confident of another member of the same group: the alternative's probability is
   at least ``repair_min_probability`` and its own threshold, and beats the mentioned one by
   ``margin``), ``unsupported`` (not predicted, no confident alternative) or ``unverifiable``
   (the CUI is not in the detector's vocabulary, when the JSON says what that is).
3. **Act** (``mode``): ``report`` changes nothing; ``repair`` replaces each contradicted
   modality / region phrase by a phrase of the detector's confident concept (whole words only,
   same form where the knowledge base has one: "abdominal" -> "thoracic", "MR image" -> "CT
   image"); ``augment`` appends one sentence naming confidently detected concepts the caption
   omits ("Nodule and pleural effusion are seen."); ``repair+augment`` does both.

Defaults (:class:`FactCheckSettings`) were chosen on the synthetic VALIDATION split with a
simulated detector (bench/factcheck_synthetic.py; BENCHMARKS.md "Fact-checked captions"); they
are settings, not constants of nature: re-tune them for a real detector.

Python API::

    from medcap.factcheck import FactCheckSettings, fact_check, knowledge_base, read_concept_probabilities
    kb = knowledge_base(read_cui_mapping("data/cui_mapping.csv"))
    evidence = read_concept_probabilities("probs.json")
    results = fact_check(captions, evidence, kb, FactCheckSettings(mode="repair+augment"))
    new_captions = {r.image_id: r.new_caption for r in results}

Modules: ``lexicon`` (the built-in concept phrases), ``knowledge`` (knowledge base and mention
matching), ``evidence`` (reading the detector's probabilities), ``check`` (verify and act).
"""
from .check import (
    MODES,
    REPORT_COLUMNS,
    VERDICTS,
    Check,
    FactCheckResult,
    FactCheckSettings,
    fact_check,
    fact_check_caption,
    report_json,
    report_rows,
    summarize,
)
from .evidence import ConceptEvidence, ImageEvidence, parse_concept_probabilities, read_concept_probabilities
from .knowledge import KnowledgeBase, Mention, MentionMatcher, exclusive_groups, knowledge_base
from .lexicon import LEXICON, Concept

__all__ = [
    "LEXICON", "MODES", "REPORT_COLUMNS", "VERDICTS", "Check", "Concept", "ConceptEvidence", "FactCheckResult",
    "FactCheckSettings", "ImageEvidence", "KnowledgeBase", "Mention", "MentionMatcher", "exclusive_groups",
    "fact_check", "fact_check_caption", "knowledge_base", "parse_concept_probabilities",
    "read_concept_probabilities", "report_json", "report_rows", "summarize",
]
