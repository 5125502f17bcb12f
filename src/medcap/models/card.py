"""Provenance and model cards: what every saved model folder says about itself.

Every ``save_pretrained`` of this package (concept detector, captioner, concept ensemble) calls
:func:`write_model_files`, which writes two files from one provenance dict:

``provenance.json``
    ``kind``, ``medcap_version``, ``data`` (dataset name, absolute path, ``synthetic`` flag and the
    dataset README's words when synthetic, sizes), ``validation`` (the scores of the saved model on
    the validation split), ``config`` (the training settings) and ``base_model``.
``README.md``
    a model card in the Hugging Face format: a YAML metadata header (``library_name``, ``tags``,
    ``datasets``, ``base_model``, ``model-index`` with the validation scores, ``synthetic_data``)
    followed by what the model is, its data, its scores and "not for clinical use".

A model whose data is unknown (saved from Python without training information) still gets both
files, with ``data`` fields set to null. Loaders read the provenance back
(:func:`read_provenance`) and, when the model learnt from SYNTHETIC data, say so once per
folder and process (:func:`notice_synthetic`, a ``medcap`` logger warning: one plain line on
stderr when nothing configured logging).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..errors import MedcapError
from ..fileio import read_json, write_text_atomic

PROVENANCE_FILE = "provenance.json"
CARD_FILE = "README.md"
KINDS = {  # kind -> (title, pipeline tag, the command that predicts with it)
    "concept-detector": ("concept detector", "image-classification", "medcap predict concepts --model"),
    "concept-ensemble": ("concept detector ensemble", "image-classification", "medcap predict concepts --model"),
    "captioner": ("captioner", "image-to-text", "medcap predict captions --model"),
}
NOT_CLINICAL = ("Not for clinical use: a research model for the ImageCLEFmedical Caption task. It must not be "
                "used to diagnose, treat or triage patients.")
SYNTHETIC_WARNING = ("learnt from SYNTHETIC data (`medcap synth`): its outputs and scores show that the "
                     "pipeline works, not what real images contain")
_logger = logging.getLogger("medcap")
_noticed: set[str] = set()


def make_provenance(kind: str, data: dict | None, validation: dict | None = None, config: dict | None = None,
                    base_model: str | None = None, **extra: Any) -> dict:
    """The provenance dict of a model of ``kind``; ``data`` is :func:`medcap.data.dataset_provenance`'s."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}")
    from .. import __version__

    out = {"kind": kind, "medcap_version": __version__,
           "data": data or {"name": None, "path": None, "synthetic": None},
           "validation": {k: _number(v) for k, v in (validation or {}).items() if _number(v) is not None},
           "config": config or {}, "base_model": base_model}
    out.update(extra)
    return out


def _number(v) -> float | int | None:
    try:
        return v if isinstance(v, int) and not isinstance(v, bool) else round(float(v), 6)
    except (TypeError, ValueError):
        return None


def write_model_files(folder: str | Path, provenance: dict | None, kind: str) -> None:
    """Write ``provenance.json`` and the ``README.md`` model card into ``folder``."""
    prov = provenance if provenance is not None else make_provenance(kind, None)
    folder = Path(folder)
    write_text_atomic(folder / PROVENANCE_FILE, json.dumps(prov, indent=1, ensure_ascii=False, default=str) + "\n")
    write_text_atomic(folder / CARD_FILE, model_card(prov))


def read_provenance(folder: str | Path) -> dict | None:
    """The folder's ``provenance.json``, or None for a folder saved before medcap wrote one."""
    path = Path(folder) / PROVENANCE_FILE
    if not path.is_file():
        return None
    prov = read_json(path, expect=None)  # the safe reader: unreadable or damaged -> one line naming it
    if not isinstance(prov, dict) or not isinstance(prov.get("data", {}), dict):
        raise MedcapError("expected a JSON object with a 'data' object", file=path)
    return prov


def load_provenance(folder: str | Path, notice: bool = True) -> dict | None:
    """:func:`read_provenance`, saying once when the model learnt from synthetic data (``notice``)."""
    prov = read_provenance(folder)
    if notice:
        notice_synthetic(folder, prov)
    return prov


def learnt_from_synthetic(provenance: dict | None) -> bool:
    return bool(provenance and (provenance.get("data") or {}).get("synthetic"))


def synthetic_line(folder: str | Path, provenance: dict | None) -> str | None:
    """One line for a model that learnt from synthetic data (None otherwise)."""
    if not learnt_from_synthetic(provenance):
        return None
    title = KINDS.get(provenance.get("kind"), ("model",))[0]
    scores = format_scores(provenance.get("validation") or {})
    return (f"note: the {title} at {folder} {SYNTHETIC_WARNING}"
            + (f" (validation on synthetic data: {scores})" if scores else ""))


def notice_synthetic(folder: str | Path, provenance: dict | None) -> None:
    """Say once per folder (and process) that this model learnt from synthetic data."""
    line = synthetic_line(folder, provenance)
    key = str(Path(folder).resolve())
    if line is None or key in _noticed:
        return
    _noticed.add(key)
    _logger.warning(line)


def format_scores(validation: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in validation.items())


# -- the model card ------------------------------------------------------------------------------
def card_metadata(prov: dict) -> dict:
    """The Hugging Face metadata header (the keys the hub reads; ``synthetic_data`` is ours)."""
    kind = prov.get("kind", "concept-detector")
    title, pipeline_tag, _ = KINDS.get(kind, KINDS["concept-detector"])
    data = prov.get("data") or {}
    synthetic = data.get("synthetic")
    tags = ["medcap", "medical-imaging", "imageclef", "imageclefmedical-caption",
            "concept-detection" if pipeline_tag == "image-classification" else "image-captioning"]
    if synthetic:
        tags.append("synthetic-data")
    meta: dict[str, Any] = {"library_name": "medcap", "pipeline_tag": pipeline_tag, "tags": tags}
    if data.get("name"):
        meta["datasets"] = [data["name"]]
    if prov.get("base_model"):
        meta["base_model"] = prov["base_model"]
    scores = prov.get("validation") or {}
    if scores:
        meta["metrics"] = sorted(scores)
        meta["model-index"] = [{"name": f"medcap {title}", "results": [{
            "task": {"type": pipeline_tag},
            "dataset": {"name": data.get("name") or "unknown", "type": data.get("name") or "unknown",
                        "split": "validation"},
            "metrics": [{"type": k, "value": v, "name": f"validation {k}"} for k, v in scores.items()],
        }]}]
    meta["synthetic_data"] = synthetic
    return meta


def model_card(prov: dict) -> str:
    """README.md: the metadata header, then what the model is, its data, its scores and its limits."""
    import yaml

    kind = prov.get("kind", "concept-detector")
    title, _, command = KINDS.get(kind, KINDS["concept-detector"])
    data = prov.get("data") or {}
    lines = ["---", yaml.safe_dump(card_metadata(prov), sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# medcap {title}", ""]
    if data.get("synthetic"):
        lines += [f"> **Synthetic data.** This model {SYNTHETIC_WARNING}.", ""]
    lines += [f"A {title} for ImageCLEFmedical Caption, trained with medcap {prov.get('medcap_version', '?')}"
              + (f" from `{prov['base_model']}`" if prov.get("base_model") else "") + ".", "",
              "## Training data", ""]
    if data.get("path") is None:
        lines += ["Unknown: this folder was saved without training information.", ""]
    else:
        lines += [f"- dataset: `{data.get('name')}` (`{data.get('path')}`)",
                  f"- synthetic: {'yes' if data.get('synthetic') else 'no'}"]
        lines += [f"- {k.replace('_', ' ')}: {v}" for k, v in data.items()
                  if k not in ("name", "path", "synthetic", "synthetic_note")]
        if data.get("synthetic_note"):
            lines += [f"- the dataset says: {' '.join(data['synthetic_note'].split())}"]
        lines.append("")
    scores = prov.get("validation") or {}
    lines += ["## Validation scores", ""]
    if scores:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in scores.items()] + [""]
    else:
        lines += ["Not recorded.", ""]
    lines += ["## Use", "", "```", f"{command} THIS_FOLDER ...", "```", "",
              "The training settings are in `provenance.json` (`config`).", "",
              "## Limitations", "", NOT_CLINICAL, ""]
    return "\n".join(lines)


def synthetic_banner(models: dict[str, dict | None]) -> str:
    """Markdown for the web app when any of ``models`` ({label: provenance}) learnt from synthetic
    data: says so and gives each such model's validation scores ("" when none did)."""
    synthetic = {label: prov for label, prov in models.items() if learnt_from_synthetic(prov)}
    if not synthetic:
        return ""
    scores = "; ".join(f"{label}: {format_scores(prov.get('validation') or {}) or 'not recorded'}"
                       for label, prov in synthetic.items())
    which = " and ".join(synthetic)
    return (f"⚠ **Synthetic training data.** The {which} learnt from SYNTHETIC images made by `medcap synth`: "
            "what they say about a real image means nothing. They show that the pipeline works. "
            f"Validation scores, on synthetic data: {scores}.")
