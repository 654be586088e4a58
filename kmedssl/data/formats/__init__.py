"""On-disk data formats (SPEC §4): each reader turns a path into a ``Dataset`` of ``ImageRecord``s.

``read_dataset(path, format=None, on_error="raise")`` picks the reader by name, or infers it from what
the path contains when exactly one reader recognises it.
"""

import importlib
import pathlib

from kmedssl.data.errors import DataError
from kmedssl.data.formats.common import ON_ERROR, Dataset, ErrorPolicy

# Format name -> reader module (imported on first use).
READER_MODULES = {
    "mimic-cxr": "mimic_cxr",
    "chexpert": "chexpert",
    "chestxray14": "chestxray14",
    "radimagenet": "radimagenet",
    "dicom": "dicom",
    "medmnist": "medmnist",
    "folder": "folder",
}
FORMATS = tuple(READER_MODULES)


def reader(format):
    """The reader module of ``format`` (it has ``read(root, on_error)`` and ``looks_like(path)``)."""
    if format not in READER_MODULES:
        raise ValueError(f"Expected format in {list(FORMATS)}. Received: format={format!r}")
    return importlib.import_module(f"{__name__}.{READER_MODULES[format]}")


def infer_format(path):
    """The one format whose reader recognises ``path``.

    Raises:
        DataError: none or several formats match (the message lists them; pass ``format=``).
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    matches = [name for name in FORMATS if name != "folder" and reader(name).looks_like(path)]
    if len(matches) == 1:
        return matches[0]
    if not matches and reader("folder").looks_like(path):
        return "folder"
    found = f"it matches {matches}" if matches else "it matches none"
    raise DataError(f"{path}: cannot infer the data format ({found}). Pass format= one of {list(FORMATS)}")


def read_dataset(path, format=None, on_error="raise"):
    """Read ``path`` with the reader of ``format`` (inferred when None)."""
    if format is None:
        format = infer_format(path)
    module = reader(format)
    if on_error not in ON_ERROR:
        raise ValueError(f"Expected on_error in {ON_ERROR}. Received: on_error={on_error!r}")
    return module.read(pathlib.Path(path), on_error=on_error)


__all__ = ["Dataset", "ErrorPolicy", "FORMATS", "infer_format", "read_dataset", "reader"]
