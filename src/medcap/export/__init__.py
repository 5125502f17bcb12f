"""Sharing trained models: a timm backbone folder, an ONNX detector, the Hugging Face hub.

- :mod:`.timm_backbone`: ``medcap export --timm RUN OUT`` (timm's own folder format);
- :mod:`.onnx_detector`: ``medcap export --onnx RUN OUT`` (probabilities out, checked against PyTorch);
- :mod:`.hub`: ``medcap push RUN owner/name`` (huggingface_hub).
"""
