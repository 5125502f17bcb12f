"""Models: backbones (timm / torchvision), the concept detector and the captioner.

Import from the submodules (``medcap.models.concept_detector``, ``medcap.models.backbones``,
``medcap.models.captioner``); this package imports nothing itself so that ``medcap --help``
stays fast.
"""
