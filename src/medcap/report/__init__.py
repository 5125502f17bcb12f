"""The HTML report (``medcap report``): scores, dataset statistics, training curves, threshold
sweep, per-concept F1 and a gallery, in one self-contained ``report.html`` plus PNG files.

    from medcap.report import ReportInputs, build_report
    build_report(ReportInputs(data="synth-data", concept_model="runs/c/model",
                              caption_model="runs/k/model", concept_pred="c.csv"), "report/")
"""
from .build import MissingPiece, ReportInputs, build_report

__all__ = ["MissingPiece", "ReportInputs", "build_report"]
