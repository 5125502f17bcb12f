"""``medcap evaluate concepts|captions`` and ``medcap validate concepts|captions``.

Thin layer over :mod:`medcap.submission` and :mod:`medcap.metrics`: read the gold files,
refuse a submission that breaks an official rule (every violation listed, exit 1), score,
print a table, and write the JSON / CSV files asked for.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import typer

from ..errors import MedcapError
from ..fileio import atomic_write
from .app import edition_option, evaluate_app, validate_app

# ---------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------

def _report_violations(path: Path, violations, *, stream_err: bool) -> None:
    for v in violations:
        typer.echo(v.format(path), err=stream_err)


def _refuse_invalid(path: Path, violations) -> int | None:
    """Print every violation on stderr and return exit code 1, or None when valid."""
    if not violations:
        return None
    _report_violations(path, violations, stream_err=True)
    typer.echo(f"error: {path}: {violations.total} rule violation(s); not scored (see `medcap validate`)", err=True)
    return 1


def _write_json(path: Path, data: dict) -> None:
    with atomic_write(path) as f:
        json.dump(data, f, indent=2, ensure_ascii=False, allow_nan=False)
        f.write("\n")


def _write_csv(path: Path, rows: Sequence[dict], columns: Sequence[str] | None = None) -> None:
    columns = list(columns or (rows[0].keys() if rows else []))
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})


def _write_outputs(summary: dict, scores, json_path: Path | None, per_image: Path | None) -> None:
    """The --json summary and the --per-image CSV of either task."""
    if json_path is not None:
        _write_json(json_path, summary)
        typer.echo(f"\nscores: {json_path}")
    if per_image is not None:
        _write_csv(per_image, scores.per_image_rows())
        typer.echo(f"per-image scores: {per_image}")


def _read_gold_captions(path: Path) -> dict[str, str]:
    """ID -> gold caption. An empty gold caption is accepted, as the organisers' reader
    accepts it (REFERENCE §10); every other problem of the file is an error."""
    from ..data.csvio import scan_captions_csv

    table = scan_captions_csv(path)
    table.problems[:] = [p for p in table.problems if p.kind != "empty_caption"]
    table.raise_first()
    return table.values


def _gold_ids(*tables: dict | None) -> list[str]:
    """The gold IDs in order: the first table's, then any only in the next (REFERENCE §7)."""
    ids: dict[str, None] = {}
    for t in tables:
        for image_id in t or ():
            ids.setdefault(image_id, None)
    return list(ids)


# ---------------------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------------------

@validate_app.command("concepts")
def validate_concepts_command(
    submission: Path = typer.Argument(..., help="Concept submission CSV (ID,CUIs)."),
    gold: Optional[Path] = typer.Option(None, "--gold", help="Gold concepts CSV: the IDs every submission must "
                                        "list exactly once (without it, the ID coverage is not checked)."),
    gold_manual: Optional[Path] = typer.Option(None, "--gold-manual",
                                               help="Manual gold CSV; its IDs are expected too."),
    allow_empty: bool = typer.Option(True, "--allow-empty/--no-empty", help="Accept rows without CUIs ('ID,'), "
                                     "as the 2025 and 2026 rules do; --no-empty asks for at least one CUI."),
    edition: int = edition_option(),
) -> int:
    """Check a concept submission against every official rule; list every violation with its line."""
    from ..data.csvio import read_concepts_csv
    from ..editions import edition_rules
    from ..submission import validate_concept_submission

    rules = edition_rules(edition)
    ids = None
    if gold is not None:
        ids = _gold_ids(read_concepts_csv(gold), read_concepts_csv(gold_manual) if gold_manual else None)
    violations = validate_concept_submission(submission, ids, allow_empty=allow_empty, edition=rules)
    return _validation_result(submission, violations, ids, rules)


@validate_app.command("captions")
def validate_captions_command(
    submission: Path = typer.Argument(..., help="Caption submission CSV (ID,Caption)."),
    gold: Optional[Path] = typer.Option(None, "--gold", help="Gold captions CSV: the IDs every submission must "
                                        "list exactly once (without it, the ID coverage is not checked)."),
    edition: int = edition_option(),
) -> int:
    """Check a caption submission against every official rule; list every violation with its line."""
    from ..editions import edition_rules
    from ..submission import validate_caption_submission

    rules = edition_rules(edition)
    ids = list(_read_gold_captions(gold)) if gold is not None else None
    violations = validate_caption_submission(submission, ids, edition=rules)
    return _validation_result(submission, violations, ids, rules)


def _validation_result(path: Path, violations, ids, rules) -> int:
    if violations:
        _report_violations(path, violations, stream_err=False)
        typer.echo(f"{path}: {violations.total} rule violation(s) of the {rules.year} rules")
        return 1
    if ids is None:
        coverage = "ID coverage not checked (no --gold)"
    else:
        coverage = f"all {len(ids)} gold IDs present" + (", in the gold order" if rules.ordered_ids else "")
    typer.echo(f"OK: {path} follows every official {rules.year} rule ({coverage})")
    return 0


# ---------------------------------------------------------------------------------------
# evaluate concepts
# ---------------------------------------------------------------------------------------

@evaluate_app.command("concepts")
def evaluate_concepts_command(
    gold: Path = typer.Option(..., "--gold", help="Gold concepts CSV (ID,CUIs)."),
    pred: Path = typer.Option(..., "--pred", help="Concept submission CSV to score."),
    gold_manual: Optional[Path] = typer.Option(None, "--gold-manual", help="Manual gold CSV for the secondary "
                                               "score (without it, the secondary score uses --gold)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the scores as JSON here."),
    per_image: Optional[Path] = typer.Option(None, "--per-image", help="Write one CSV row per image here."),
    per_concept: Optional[Path] = typer.Option(None, "--per-concept", help="Write precision/recall/F1 of every "
                                               "concept as CSV here."),
    cui_mapping: Optional[Path] = typer.Option(None, "--cui-mapping",
                                               help="cui_mapping.csv: concept names in the tables."),
    empty_gold: str = typer.Option("skip", "--empty-gold", help="Images whose gold list is empty: 'skip' (the "
                                   "official rule) or 'organisers-code' (what their code does with 'ID,' gold rows)."),
    top: int = typer.Option(10, "--top", min=0, help="Concepts shown in the best / worst tables."),
    allow_empty: bool = typer.Option(True, "--allow-empty/--no-empty", help="Accept rows without CUIs (as both "
                                     "editions do)."),
    edition: int = edition_option(),
) -> int:
    """Score a concept submission exactly as the official evaluator: primary and secondary F1."""
    from ..data.csvio import read_concepts_csv, read_cui_mapping
    from ..editions import edition_rules
    from ..metrics.concepts import EMPTY_GOLD_MODES, score_concepts
    from ..metrics.tables import format_value, text_table
    from ..submission import check_concept_submission

    rules = edition_rules(edition)
    if empty_gold not in EMPTY_GOLD_MODES:
        raise MedcapError(f"--empty-gold must be one of {', '.join(EMPTY_GOLD_MODES)}, got {empty_gold!r}")
    gold_sets = read_concepts_csv(gold)
    manual_sets = read_concepts_csv(gold_manual) if gold_manual is not None else None
    preds, violations = check_concept_submission(pred, _gold_ids(gold_sets, manual_sets), allow_empty=allow_empty,
                                                 edition=rules)
    refused = _refuse_invalid(pred, violations)
    if refused is not None:
        return refused
    names = read_cui_mapping(cui_mapping) if cui_mapping is not None else {}
    scores = score_concepts(gold_sets, preds, manual_sets, empty_gold=empty_gold)
    s = scores.summary
    s["edition"] = rules.year  # concept scores are the same in both editions (REFERENCE §7)

    typer.echo(f"Concept detection ({rules.year} rules): {pred} against {gold}")
    source = "manual gold" if gold_manual else "no --gold-manual: --gold used"
    rows = [["primary F1", s["primary_f1"], f"{s['n_scored']} of {s['n_images']} images"],
            ["secondary F1", s["secondary_f1"], f"{s['n_scored_secondary']} images with one of the 15 CUIs ({source})"]]
    typer.echo(text_table(["score", "value", "scored"], rows))
    if s["n_empty_gold"]:
        typer.echo(f"note: {s['n_empty_gold']} gold rows are empty; they are "
                   f"{'left out' if empty_gold == 'skip' else 'scored'} (the organisers' code would print "
                   f"{format_value(s['primary_f1_organisers_code'])}; see --empty-gold)")
    typer.echo(f"mean concepts per image: gold {s['mean_gold_concepts']:.2f}, predicted {s['mean_pred_concepts']:.2f}; "
               f"{s['n_empty_pred']} images with no prediction")

    concept_rows = scores.per_concept_rows(names)
    if top and concept_rows:
        _print_best_and_worst(concept_rows, top)

    _write_outputs(s, scores, json_path, per_image)
    if per_concept is not None:
        _write_csv(per_concept, concept_rows)
        typer.echo(f"per-concept scores: {per_concept}")
    return 0


def _print_best_and_worst(concept_rows: list[dict], top: int) -> None:
    """The ``top`` best and worst concepts by F1, among those in the gold file."""
    from ..metrics.tables import text_table

    supported = [r for r in concept_rows if r["support"] > 0]
    best = sorted(supported, key=lambda r: (-r["f1"], -r["support"], r["CUI"]))[:top]
    worst = sorted(supported, key=lambda r: (r["f1"], -r["support"], r["CUI"]))[:top]
    cols = ["CUI", "name", "support", "predicted", "precision", "recall", "f1"]
    for title, chosen in ((f"best {top} concepts by F1", best), (f"worst {top} concepts by F1", worst)):
        typer.echo(f"\n{title} (of {len(supported)} concepts in the gold file):")
        typer.echo(text_table(cols, [[r[c] for c in cols] for r in chosen], numeric=range(2, len(cols))))


# ---------------------------------------------------------------------------------------
# evaluate captions
# ---------------------------------------------------------------------------------------

def _print_caption_summary(s: dict) -> None:
    """One row per scorer and aggregate (value, and how it was computed or how to enable it)."""
    from ..metrics.registry import AGGREGATE_TITLES, SCORERS
    from ..metrics.tables import text_table

    rows = [[scorer.label.format(**s["settings"]), s[key], scorer.describe(s)]
            for key, scorer in SCORERS.items() if key in s]
    for key, title in AGGREGATE_TITLES.items():
        if key not in s:
            continue
        if s[key] is None:
            note = f"needs {', '.join(s[key + '_missing'])}"
        else:
            note = f"mean of {', '.join(s[key + '_terms'])}" + (" (PARTIAL)" if s[key + "_partial"] else "")
        if key == "overall":
            note += "; not an evaluator output"
        rows.append([title, s[key], note])
    typer.echo(text_table(["measure", "value", ""], rows))
    typer.echo(f"note: {s['overall_note']}")
    if s["not_available"]:
        typer.echo("\nnot available:")
        for key, how in s["not_available"].items():
            typer.echo(f"  {key}: {how}")


@evaluate_app.command("captions")
def evaluate_captions_command(
    gold: Path = typer.Option(..., "--gold", help="Gold captions CSV (ID,Caption)."),
    pred: Path = typer.Option(..., "--pred", help="Caption submission CSV to score."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of the images (<ID>.jpg), for the "
                                          "image-text similarity."),
    bertscore_model: str = typer.Option("microsoft/deberta-xlarge-mnli", "--bertscore-model",
                                        help="BERTScore model: the official one (default) or a local folder; "
                                        "'none' skips BERTScore."),
    bertscore_layers: Optional[int] = typer.Option(None, "--bertscore-layers", min=1, help="Layer of the BERTScore "
                                                   "model (default: bert-score's choice, or the last layer)."),
    bertscore_measure: str = typer.Option("f1", "--bertscore-measure", help="f1 (the organisers' public code, "
                                          "2026) or recall (the 2025 paper; not with the 2026 preset)."),
    cui_mapping: Optional[Path] = typer.Option(None, "--cui-mapping", help="cui_mapping.csv: enables the offline "
                                               "approximation of the UMLS concept F1 (umls_f1_approx)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Caption aggregate: '2026' (Relevance = mean("
                                         "BERTScore F1, ROUGE-1, Similarity, BLEURT)), 'public-2025' or 'paper' "
                                         "(2025 variants); default: the one of --edition."),
    relevance: Optional[str] = typer.Option(None, "--relevance", help="2025 variants: 'public-2025': Relevance = "
                                            "mean(Similarity, BERTScore, ROUGE-1); 'paper': with BLEURT as a fourth "
                                            "term (the same as --preset)."),
    image_embeddings: Optional[Path] = typer.Option(None, "--image-embeddings", help="Precomputed image embeddings "
                                                    "(.npz, one array per ID) for the similarity, as in 2026; the "
                                                    "captions are encoded with --medimageinsight."),
    edition: int = edition_option(),
    partial: bool = typer.Option(False, "--partial-aggregates", help="Average the terms that ran when some "
                                 "scorers are not available (labelled partial); default: such aggregates are null."),
    bleurt_model: str = typer.Option("lucadiliello/BLEURT-20-D12", "--bleurt-model", help="BLEURT model or folder; "
                                     "'none' skips it."),
    alignscore_ckpt: Optional[Path] = typer.Option(None, "--alignscore-ckpt", help="AlignScore-base.ckpt."),
    medcat_model: Optional[Path] = typer.Option(None, "--medcat-model", help="MedCAT UMLS model pack (.zip)."),
    medimageinsight: Optional[Path] = typer.Option(None, "--medimageinsight", help="MedImageInsights checkout."),
    download: bool = typer.Option(False, "--download", help="Let missing models download from the Hugging Face hub."),
    empty_similarity: str = typer.Option("organisers-code", "--empty-similarity", help="Similarity of an empty "
                                         "prediction: 'organisers-code' (the edition's code: 2025 encodes it, two "
                                         "empty captions score 1; 2026 scores it 0) or 'rules' (the written rules: "
                                         "0, two empty captions 1)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Captions per BERTScore encoding batch (the "
                                   "scores do not depend on it)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the scores as JSON here."),
    per_image: Optional[Path] = typer.Option(None, "--per-image", help="Write one CSV row per image here."),
) -> int:
    """Score a caption submission with the official preprocessing and measures."""
    from ..data.csvio import read_cui_mapping
    from ..editions import edition_rules
    from ..metrics.editions import caption_preset, load_image_embeddings, score_captions_preset
    from ..metrics.scorers import SIMILARITY_EMPTY_MODES
    from ..submission import check_caption_submission

    rules = edition_rules(edition)
    if preset is not None and relevance is not None and preset != relevance:
        raise MedcapError(f"--preset {preset} and --relevance {relevance} disagree; give one")
    chosen = caption_preset(preset or relevance, edition=rules)
    if empty_similarity not in SIMILARITY_EMPTY_MODES:
        raise MedcapError(f"--empty-similarity must be one of {', '.join(SIMILARITY_EMPTY_MODES)}, "
                          f"got {empty_similarity!r}")
    gold_captions = _read_gold_captions(gold)
    captions, violations = check_caption_submission(pred, list(gold_captions), edition=rules)
    refused = _refuse_invalid(pred, violations)
    if refused is not None:
        return refused
    if bertscore_measure not in ("f1", "recall"):
        raise MedcapError(f"--bertscore-measure must be f1 or recall, got {bertscore_measure!r}")
    none = {"", "none", "off"}
    embeddings = load_image_embeddings(image_embeddings) if image_embeddings is not None else None
    scores = score_captions_preset(
        gold_captions, captions, preset=chosen.name, image_embeddings=embeddings,
        bertscore_model=None if bertscore_model.lower() in none else bertscore_model,
        bertscore_num_layers=bertscore_layers, bertscore_measure=bertscore_measure, batch_size=batch_size,
        device=device, images_dir=images, cui_names=None if cui_mapping is None else read_cui_mapping(cui_mapping),
        bleurt_model=None if bleurt_model.lower() in none else bleurt_model,
        alignscore_checkpoint=alignscore_ckpt, medcat_model=medcat_model, medimageinsight_dir=medimageinsight,
        partial_aggregates=partial, download=download, empty_similarity=empty_similarity,
    )
    s = scores.summary
    s["edition"] = rules.year
    typer.echo(f"Caption prediction ({rules.year} rules, preset {chosen.name}): {pred} against {gold} "
               f"({s['n_images']} images)")
    _print_caption_summary(s)
    if s["n_empty_gold"]:
        typer.echo(f"note: {s['n_empty_gold']} gold captions are empty; scored as the organisers' code scores them "
                   "(REFERENCE §10)")
    _write_outputs(s, scores, json_path, per_image)
    return 0
