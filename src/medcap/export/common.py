"""What every export shares: the detector it reads and the output folder it may replace."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import MedcapError


def require(*packages: str, extra: str) -> None:
    """One line naming what to install when an optional package is missing."""
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise MedcapError(f"this needs {' and '.join(missing)}: pip install 'medcap[{extra}]' "
                          f"(or pip install {' '.join(missing)})")


def load_detector_folder(run: str | Path, what: str):
    """(model folder, its concept detector) of a run folder or model folder (not an ensemble, not a
    captioner)."""
    from ..models.concept_detector import ConceptDetector
    from ..models.ensemble import is_ensemble_folder
    from ..models.location import model_kind, resolve_model_folder

    folder = resolve_model_folder(run, None)
    if model_kind(folder) == "captions":
        raise MedcapError(f"{run} is a captioner; {what} exports a concept detector")
    if is_ensemble_folder(folder):
        raise MedcapError(f"{run} is an ensemble; {what} exports one concept detector (export each member)")
    return folder, ConceptDetector.from_pretrained(folder)


def check_output(out: str | Path, run: str | Path, marker: str) -> Path:
    """OUT may be new, empty, or an earlier export of the same kind (holding ``marker``): the export
    replaces it whole (medcap.fileio.atomic_dir). Anything else is refused, the run folder first."""
    out, source = Path(out).resolve(), Path(run).resolve()
    if out == source or source in out.parents or out in source.parents:
        raise MedcapError("the output folder must be outside the model's run folder", file=out)
    from ..models.location import RUN_MODEL_DIR, model_kind

    if out.is_dir() and (model_kind(out) is not None or (out / RUN_MODEL_DIR).is_dir()):
        # a medcap model or run folder also holds config.json, the timm export's marker: never replaced
        raise MedcapError("the output folder holds a medcap model or training run; choose a new or empty folder",
                          file=out)
    if out.is_dir() and any(out.iterdir()) and not (out / marker).is_file():
        raise MedcapError(f"the output folder exists and holds something else than an export (no {marker}); "
                          "choose a new or empty folder", file=out)
    return out
