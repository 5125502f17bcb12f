"""Experiment trackers (TensorBoard, MLflow, Weights & Biases) through Accelerate's trackers."""
