"""Where a trained model is: the one rule every command and ``from_pretrained`` follow.

A model is named by one of

- a run folder, the ``--out`` of ``medcap train concepts|captions`` (it holds ``model/``);
- that ``model/`` folder itself (or any folder ``save_pretrained`` wrote);
- a Hugging Face hub id ``owner/name`` (``medcap push`` uploads model folders there), used only
  when the string is not an existing path and its first part is not a local folder, so a
  mistyped local path fails at once ("model folder not found") instead of after the hub
  client's retries. The hub copy, pinned to a ``revision`` (commit, tag or branch) when given,
  comes from the Hugging Face cache or is downloaded there (``huggingface_hub.snapshot_download``)
  and is then read as a local folder, by the same rules.

A folder of the other task is refused with the command that reads it, e.g. "X is a
captioner; use `medcap predict captions`" (REFERENCE §9: a model folder carries everything
needed to predict, including what kind of model it is).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import MedcapError, MissingWeightsError, first_line
from ..fileio import recover_dir
from .hub import hub_access

RUN_MODEL_DIR = "model"                 # the engine's best-model folder inside a run folder
CONCEPT_MODEL_TYPE = "medcap-concept-detector"
CAPTIONER_MARKERS = ("medcap_captioner.json", "generation_config.json")
VLM_MARKER = "medcap_vlm.json"         # a vision-language captioner (medcap.models.vlm); a LoRA one has no config.json
KINDS = ("concepts", "captions")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What a model folder holds (medcap's folders, transformers' and timm's): the hub copies of other
# frameworks' weights (tf_model.h5, flax, the pytorch_model.bin beside model.safetensors) stay there.
HUB_FILES = ("*.json", "*.safetensors", "*.txt", "*.md", "*.model", "*.jinja")  # .jinja: a VLM's chat template
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


def missing_weights_message(name: str, error: BaseException | None = None, revision: str | None = None) -> str:
    why = f" ({first_line(error, 160)})" if error is not None else ""
    pinned = f" --revision {revision}" if revision else ""
    return (f"the pretrained weights {name!r}{' at revision ' + repr(revision) if revision else ''} are not on this "
            f"machine and cannot be downloaded from here{why}. On a machine with internet run `hf download {name}"
            f"{pinned}` (older huggingface_hub: `huggingface-cli download {name}{pinned}`), then either copy its "
            "Hugging Face cache (~/.cache/huggingface) here and set HF_HOME to the copy, or save the model folder "
            "and pass its path instead of the hub name (e.g. --set model=/path/to/blip-image-captioning-large)")


def is_hub_failure(error: BaseException) -> bool:
    """An error of the hub or the network (offline, no token, no such repo or revision, no
    connection: httpx's errors are no OSError), not a bug."""
    package = type(error).__module__.split(".")[0]
    return isinstance(error, (OSError, ValueError)) or package in ("huggingface_hub", "httpx", "httpx2")


def hub_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The local copy of hub model ``repo_id`` at ``revision`` (None: the default branch), from the
    Hugging Face cache or downloaded into it; MissingWeightsError (one line) when neither works."""
    from huggingface_hub import snapshot_download

    try:
        with hub_access():   # offline: the cache only, at once (no retry loop; models.hub)
            return Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(HUB_FILES)))
    except Exception as e:
        if not is_hub_failure(e):
            raise
        # a mistyped local path looks like a hub id too: say both
        raise MissingWeightsError(f"no local folder {repo_id}, and as a hub id: "
                                  + missing_weights_message(repo_id, e, revision)) from None


def resolve_model_folder(path_or_id: str | Path, kind: str | None = "concepts", revision: str | None = None) -> Path:
    """The model folder named by ``path_or_id``: a local folder, or the local copy of a hub id
    (at ``revision``).

    MedcapError when the path does not exist, is a file, or holds the other task's model.
    ``kind=None`` takes a folder of either task (``model_kind`` tells which).
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    name = str(path_or_id)
    folder = Path(name).expanduser()
    # A crash inside atomic_dir leaves the only good copy as .NAME.old (a run folder: .model.old):
    # put back here, so every loader (BLIP, VLM, detector, ensemble, export, serve) gets it
    recover_dir(folder if not folder.is_dir() or model_kind(folder) is not None else folder / RUN_MODEL_DIR,
                debris=False)
    if not folder.exists() and is_hub_id(name):
        folder = hub_snapshot(name, revision)
    elif revision is not None:
        raise MedcapError(f"--revision applies to a hub id (owner/name), not to the local path {name}")
    if not folder.exists():
        task = kind or "concepts|captions"
        raise MedcapError(f"model folder not found: {name} (expected a run folder of `medcap train {task}`, "
                          "its model/ folder, or a Hugging Face hub id owner/name)")
    if not folder.is_dir():
        raise MedcapError("expected a model folder, got a file", file=folder)
    if model_kind(folder) is None and (folder / RUN_MODEL_DIR).is_dir():
        folder = folder / RUN_MODEL_DIR          # a run folder: its best model
    found = model_kind(folder)
    if found is not None and kind is not None and found != kind:
        what, command = _NAMES[found]
        raise MedcapError(f"{name} is {what}; use `{command}`", file=None)
    return folder
