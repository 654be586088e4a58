"""On-disk data formats (SPEC §4): each reader turns a path into a ``Dataset`` of ``ImageRecord``s.

``read_dataset(path, format=None, on_error="raise")`` picks the reader by name, or infers it from what
the path contains when exactly one reader recognises it (the ``folder`` format only when no other does: the
``masks`` layout, whose ``index.csv`` the folder reader also reads, is ``masks``).

``read_dense(path, format=None, on_error="raise")`` reads a data set with masks (``DENSE_FORMATS``: SIIM-ACR,
JSRT/SCR, ChestX-Det and the generic image + mask folder) into a ``dense.DenseDataset``; ``read_dataset`` reads
the same folders as classification ``Dataset``s (for pretraining and classification evaluation).
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
    "siim": "siim",
    "jsrt": "jsrt",
    "chestx-det": "chestx_det",
    "masks": "masks",
}
FORMATS = tuple(READER_MODULES)
# Dense format -> the name of its reader module's DenseDataset reader.
DENSE_READERS = {"siim": "read_siim", "jsrt": "read_jsrt", "chestx-det": "read_chestx_det", "masks": "read_masks"}
DENSE_FORMATS = tuple(DENSE_READERS)
# Layout -> the generic formats whose files it holds, which it wins over in ``infer_format``.
LAYOUTS_OF = {"siim": ("dicom",), "masks": ("folder",)}


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
    if len(matches) > 1 and any(name in LAYOUTS_OF for name in matches):
        # A layout that holds files of a generic format (SIIM-ACR's DICOM files): the layout wins.
        matches = [name for name in matches if not any(name in LAYOUTS_OF.get(m, ()) for m in matches)]
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


def read_dense(path, format=None, on_error="raise"):
    """Read ``path`` with the dense reader of ``format`` (one of ``DENSE_FORMATS``; inferred when None) into a
    ``dense.DenseDataset``.

    Raises:
        DataError: the format cannot be inferred, or is inferred as one without masks, or a reader's problem.
        ValueError: ``format`` or ``on_error`` is not a known value.
    """
    if format is None:
        format = infer_format(path)
        if format not in DENSE_READERS:
            raise DataError(f"{path}: read as {format!r}, a format without masks. Expected a data set in one of "
                            f"{list(DENSE_FORMATS)}")
    if format not in DENSE_READERS:
        raise ValueError(f"Expected format in {list(DENSE_FORMATS)}. Received: format={format!r}")
    if on_error not in ON_ERROR:
        raise ValueError(f"Expected on_error in {ON_ERROR}. Received: on_error={on_error!r}")
    return getattr(reader(format), DENSE_READERS[format])(pathlib.Path(path), on_error=on_error)


__all__ = ["DENSE_FORMATS", "Dataset", "ErrorPolicy", "FORMATS", "infer_format", "read_dataset", "read_dense",
           "reader"]
