"""What is built on trained models and chosen on validation, never on test.

baselines.py   most frequent concepts, kNN concepts, constant and retrieval captions
ensemble.py    build_ensemble: detectors + kNN vote shares, fusion and thresholds on validation
consistent.py  concept-consistent retrieval captions; the beam-rerank weight on validation
"""
