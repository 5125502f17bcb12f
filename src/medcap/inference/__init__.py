"""Prediction with trained model folders.

concepts.py  load_detector, predict_probabilities / predict_concepts, image_embeddings
captions.py  predict_captions (+ --rerank concepts)
rerank.py    concept agreement of a caption; beams reranked by it
explain.py   heatmaps per predicted concept
pipeline.py  Pipeline: both models loaded once, analyze(image) -> Analysis (web app + report)
"""
