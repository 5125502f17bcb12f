"""``medcap factcheck``: verify (and repair / augment) any captioner's captions against any
concept detector's probabilities. Thin layer over :mod:`medcap.factcheck`."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import MedcapError
from .app import app

# The option defaults repeat medcap.factcheck.FactCheckSettings' (a test keeps them equal);
# that module is imported inside the command so that `medcap --help` stays fast.


@app.command("factcheck")
def factcheck_command(
    captions: Path = typer.Option(..., "--captions", "-c", help="Caption submission to check (ID,Caption).",
                                  show_default=False),
    concept_probs: Path = typer.Option(..., "--concept-probs", "-p", show_default=False,
                                       help="The --json file of `medcap predict concepts` for the same images "
                                            "(with --all-probabilities every probability is exact)."),
    cui_mapping: Optional[Path] = typer.Option(None, "--cui-mapping", help="cui_mapping.csv (CUI,Canonical name): "
                                               "more concept names to match (the built-in synonyms always apply)."),
    mode: str = typer.Option("report", "--mode", help="report | repair | augment | repair+augment."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Caption submission to write (needed unless "
                                       "--mode report)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Per-image mentions and verdicts: JSON, or one "
                                          "row per verdict when the name ends in .csv."),
    margin: float = typer.Option(0.3, "--margin", help="Contradicted: the detector's confident modality / region "
                                 "beats the mentioned one by at least this."),
    repair_min_prob: float = typer.Option(0.5, "--repair-min-prob", help="... and has at least this probability."),
    augment_min_prob: float = typer.Option(0.7, "--augment-min-prob", help="Augment names an omitted concept only "
                                           "with at least this probability."),
    max_added: int = typer.Option(3, "--max-added", help="At most this many concepts appended per caption."),
) -> int:
    """Fact-check captions against the concept detector: report, repair contradicted modality /
    body-region phrases, and/or append confidently detected findings the caption omits."""
    from ..data import read_cui_mapping
    from ..factcheck import FactCheckSettings, fact_check, knowledge_base, read_concept_probabilities
    from ..submission import read_caption_submission, write_caption_submission

    settings = FactCheckSettings(mode=mode, margin=margin, repair_min_probability=repair_min_prob,
                                 augment_min_probability=augment_min_prob, max_added=max_added)
    _check_outputs(mode, out, report, concept_probs)
    texts = read_caption_submission(captions)
    evidence = read_concept_probabilities(concept_probs)
    missing = [i for i in texts if i not in evidence.images]
    if missing:
        raise MedcapError(f"{len(missing)} of {len(texts)} caption IDs are not in {concept_probs}, e.g. "
                          f"{missing[0]!r} (were both made for the same images?)", file=captions)
    kb = knowledge_base(read_cui_mapping(cui_mapping) if cui_mapping is not None else None)
    results = fact_check(texts, evidence, kb, settings)

    if out is not None:
        write_caption_submission(out, {r.image_id: r.new_caption for r in results})
    if report is not None:
        _write_report(report, results, settings)
    _print_summary(results, settings, len(evidence.images) - len(texts), concept_probs)
    for path, what in ((out, "captions"), (report, "report")):
        if path is not None:
            typer.echo(f"{what}: {path}")
    return 0


def _check_outputs(mode: str, out: Path | None, report: Path | None, concept_probs: Path) -> None:
    """Something to write, and no output overwriting an input or the other output."""
    if out is None and mode != "report":
        raise MedcapError(f"--mode {mode} changes captions: pass --out NEW_SUBMISSION.csv")
    if out is None and report is None:
        raise MedcapError("nothing to write: pass --report REPORT.json (and/or --out)")
    for path in (out, report):
        if path is not None and path.resolve() == concept_probs.resolve():
            raise MedcapError("refusing to overwrite the concept probabilities", file=path)
    if report is not None and out is not None and report.resolve() == out.resolve():
        raise MedcapError("--report and --out name the same file", file=report)


def _write_report(report: Path, results, settings) -> None:
    """The per-image verdicts: one CSV row per verdict when the name ends in .csv, else JSON."""
    from ..factcheck import REPORT_COLUMNS, report_json, report_rows
    from ..fileio import atomic_write

    with atomic_write(report, newline="") as f:
        if report.suffix.lower() == ".csv":
            writer = csv.DictWriter(f, fieldnames=list(REPORT_COLUMNS), lineterminator="\n")
            writer.writeheader()
            for row in report_rows(results):
                writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in REPORT_COLUMNS})
        else:
            json.dump(report_json(results, settings), f, indent=1, ensure_ascii=False)
            f.write("\n")


def _print_summary(results, settings, extra: int, concept_probs: Path) -> None:
    from ..factcheck import summarize

    s = summarize(results)
    v = s["verdicts"]
    typer.echo(f"checked {s['n_images']} captions: {s['n_mentions']} concept mentions ({v['supported']} supported, "
               f"{v['unsupported']} unsupported, {v['contradicted']} contradicted, {v['unverifiable']} unverifiable)"
               + (f"; {extra} images of {concept_probs.name} have no caption" if extra > 0 else ""))
    if settings.repairs:
        typer.echo(f"repair: replaced {s['n_replaced']} phrases in {s['n_captions_repaired']} captions")
    if settings.augments:
        typer.echo(f"augment: added {s['n_concepts_added']} concepts to {s['n_captions_augmented']} captions")
