"""Reading ImageCLEFmedical Caption / ROCOv2 data: CSVs, dataset folders, images, the
concept vocabulary, the dataset checker and dataset statistics (REFERENCE §5).

Importing this package is cheap: numpy, PIL, pydicom, pyarrow and matplotlib are
imported by the functions that need them.
"""
from .check import CheckResult, check_dataset, inspect_dataset
from .csvio import (
    CsvTable,
    Problem,
    read_captions_csv,
    read_concepts_csv,
    read_cui_mapping,
    scan_captions_csv,
    scan_concepts_csv,
    scan_cui_mapping,
)
from .dataset import ImageCLEFDataset, Split, canonical_split_name, read_dataset
from .images import IMAGE_EXTENSIONS, is_dicom, list_images, load_image
from .provenance import dataset_provenance, is_synthetic
from .stats import compute_stats, dataset_stats
from .vocab import ConceptVocabulary

__all__ = [
    "CheckResult", "ConceptVocabulary", "CsvTable", "IMAGE_EXTENSIONS", "ImageCLEFDataset", "Problem", "Split",
    "canonical_split_name", "check_dataset", "compute_stats", "dataset_stats", "dataset_provenance",
    "inspect_dataset", "is_dicom", "is_synthetic",
    "list_images", "load_image", "read_captions_csv", "read_concepts_csv", "read_cui_mapping", "read_dataset",
    "scan_captions_csv", "scan_concepts_csv", "scan_cui_mapping",
]
