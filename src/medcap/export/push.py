"""``medcap push RUN owner/name``: a model folder to the Hugging Face hub (huggingface_hub).

What is uploaded is the folder that loads with one call: a run folder's ``model/`` (its model
card ``README.md`` included), or any export folder (``medcap export --timm`` gives a folder
that ``timm.create_model("hf-hub:owner/name", pretrained=True)`` reads). Every command that
takes a model folder also takes the hub id, pinned to a commit, tag or branch with
``--revision`` (medcap.models.location).

Without network, with ``HF_HUB_OFFLINE=1`` or without a token, the hub's refusal is one line.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import MedcapError, first_line
from ..models.location import is_hub_failure, resolve_model_folder
from ..models.weights import check_folder

# The files that make a folder loadable (models.location for medcap folders; an ONNX export).
_MODEL_MARKERS = ("config.json", "model.onnx")


def _model_folder(folder: Path) -> Path:
    folder = resolve_model_folder(folder, None)
    if not any((folder / m).is_file() for m in _MODEL_MARKERS):
        raise MedcapError(f"not a model folder: no {' or '.join(_MODEL_MARKERS)} (expected a run folder, its "
                          "model/ folder or a `medcap export` folder)", file=folder)
    return folder


def push_model(run: str | Path, repo_id: str, private: bool = False, api=None,
               commit_message: str | None = None) -> str:
    """Create ``repo_id`` (if needed) and upload the model folder of ``run`` -> the commit's URL.

    ``api``: an ``huggingface_hub.HfApi`` (default: a new one, reading the token from ``HF_TOKEN``
    or ``hf auth login``)."""
    from huggingface_hub.utils import validate_repo_id

    folder = _model_folder(Path(run))
    check_folder(folder)  # never publish a damaged folder: its weight files against checksums.json
    try:
        if repo_id.count("/") != 1:
            raise ValueError("not of the form owner/name")
        validate_repo_id(repo_id)
    except ValueError as e:
        raise MedcapError(f"expected a hub repository id owner/name, got {repo_id!r} ({first_line(e)})") from None
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 commit_message=commit_message or "Upload with medcap push")
    except Exception as e:
        if not is_hub_failure(e):
            raise
        raise MedcapError(f"cannot push to the Hugging Face hub ({first_line(e)}); check the network, HF_HUB_OFFLINE "
                          "and your token (`hf auth login` or HF_TOKEN)") from None
    return str(getattr(info, "commit_url", info))
