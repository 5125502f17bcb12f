"""Where a trained model is: the one rule every command and ``from_pretrained`` follow.

A model is named by one of

- a run folder, the ``--out`` of ``medcap train concepts|captions`` (it holds ``model/``);
- that ``model/`` folder itself (or any folder ``save_pretrained`` wrote);
- a Hugging Face hub id ``owner/name`` (captioners only), used only when the string is not
  an existing path and its first part is not a local folder, so a mistyped local path fails
  at once ("model folder not found") instead of after the hub client's retries.

A folder of the other task is refused with the command that reads it, e.g. "X is a
captioner; use `medcap predict captions`" (REFERENCE §9: a model folder carries everything
needed to predict, including what kind of model it is).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import MedcapError

RUN_MODEL_DIR = "model"                 # the engine's best-model folder inside a run folder
CONCEPT_MODEL_TYPE = "medcap-concept-detector"
CAPTIONER_MARKERS = ("medcap_captioner.json", "generation_config.json")
VLM_MARKER = "medcap_vlm.json"         # a vision-language captioner (medcap.models.vlm); a LoRA one has no config.json
KINDS = ("concepts", "captions")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_NAMES = {"concepts": ("a concept detector", "medcap predict concepts"),
          "captions": ("a captioner", "medcap predict captions")}


def model_kind(folder: str | Path) -> str | None:
    """"concepts", "captions", or None when ``folder`` holds neither (no or unknown config.json)."""
    folder = Path(folder)
    config = folder / "config.json"
    if (folder / VLM_MARKER).is_file():
        return "captions"
    if not config.is_file():
        return None
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (ValueError, UnicodeDecodeError, AttributeError):
        model_type = None
    if model_type == CONCEPT_MODEL_TYPE or (folder / "concepts.json").is_file():
        return "concepts"
    if model_type == "blip" or any((folder / m).is_file() for m in CAPTIONER_MARKERS):
        return "captions"
    return None


def is_hub_id(name: str) -> bool:
    """``owner/name`` that is not a local path (nor starts inside an existing local folder)."""
    if not _HUB_ID.match(name) or name.startswith((".", "/", "~")):
        return False
    return not Path(name).exists() and not Path(name.split("/", 1)[0]).is_dir()


def resolve_model_folder(path_or_id: str | Path, kind: str | None = "concepts") -> Path | str:
    """The model folder named by ``path_or_id`` (a Path), or a hub id (a str, captioners only).

    MedcapError when the path does not exist, is a file, or holds the other task's model.
    ``kind=None`` takes a folder of either task (``model_kind`` tells which).
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    name = str(path_or_id)
    folder = Path(name).expanduser()
    if not folder.exists():
        if kind == "captions" and is_hub_id(name):
            return name
        task = kind or "concepts|captions"
        raise MedcapError(f"model folder not found: {name} (expected a run folder of `medcap train {task}`, "
                          "its model/ folder" + (", or a Hugging Face hub id owner/name)" if kind == "captions"
                                                 else ")"))
    if not folder.is_dir():
        raise MedcapError("expected a model folder, got a file", file=folder)
    if model_kind(folder) is None and (folder / RUN_MODEL_DIR).is_dir():
        folder = folder / RUN_MODEL_DIR          # a run folder: its best model
    found = model_kind(folder)
    if found is not None and kind is not None and found != kind:
        what, command = _NAMES[found]
        raise MedcapError(f"{name} is {what}; use `{command}`", file=None)
    return folder
