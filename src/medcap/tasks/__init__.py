"""Task glue on top of the shared engine (medcap.engine): ``concepts`` and ``captions``.

Each task module gives a config dataclass, an engine Task, ``train_*`` and ``predict_*``.
Nothing is imported here, so ``medcap --help`` stays fast.
"""
