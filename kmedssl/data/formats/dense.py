"""What the dense-task readers (SIIM-ACR, JSRT/SCR, ChestX-Det) return: images with per-structure masks.

Each reader (``siim.read_siim``, ``jsrt.read_jsrt``, ``chestx_det.read_chestx_det``) lists the data set
and checks every annotation it can without decoding pixels (RLE syntax and extent, mask and image sizes
from the file headers, polygon coordinates), so a bad mask is reported when the data set is read. It
returns a ``DenseDataset``; ``dataset.load(record)`` decodes one image and its masks::

    dataset = read_siim("/data/siim")
    image, masks = dataset.load(dataset.records[0])   # (H, W) float32 in [0, 1], {name: (H, W) bool}

Every mask of ``dataset.structures`` is in ``masks`` (all False where the image has none of it), at the
image's size ``record.size``.
"""

import dataclasses
import pathlib
import typing

import numpy as np


@dataclasses.dataclass(frozen=True)
class DenseRecord:
    """One image of a dense-task data set.

    Attributes:
        image_id: the image's name in its data set (a file stem; a pseudonym for DICOM UIDs).
        path: the image file.
        size: ``(height, width)`` of the image and of its masks as ``DenseDataset.load`` returns them.
        labels: multi-hot (0.0/1.0) over ``DenseDataset.label_names``.
        annotation: what the masks are decoded from (format-specific: RLE strings, mask files, polygons).
    """

    image_id: str
    path: str
    size: tuple
    labels: tuple = ()
    annotation: typing.Any = None


@dataclasses.dataclass
class DenseDataset:
    """The records of one dense-task data set read from disk.

    Attributes:
        format: reader name ("siim", "jsrt", "chestx-det").
        root: the path that was read.
        records: every readable ``DenseRecord``.
        structures: the mask names every ``load`` returns.
        label_names: names of ``record.labels``.
        skipped: ``(file, problem)`` of every item left out under ``on_error="skip"``.
        loader: ``loader(record) -> (image, masks)``; use ``load``.
    """

    format: str
    root: pathlib.Path
    records: list
    structures: tuple
    label_names: tuple = ()
    skipped: list = dataclasses.field(default_factory=list)
    loader: typing.Optional[typing.Callable] = None

    def load(self, record):
        """``(image (H, W) float32 in [0, 1], {structure: (H, W) bool})`` of ``record``.

        Raises:
            DataError: the image (or a mask file) cannot be decoded (the message names the file).
        """
        return self.loader(record)


def binary_mask(pixels):
    """A decoded mask image (H, W) or (H, W, C) of any integer type -> bool: at least half the type's maximum
    (8-bit: >= 128) in the first channel."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 3:
        pixels = pixels[..., 0]
    top = np.iinfo(pixels.dtype).max if np.issubdtype(pixels.dtype, np.integer) else 1.0
    return pixels >= (top + 1) / 2 if np.issubdtype(pixels.dtype, np.integer) else pixels >= 0.5 * top
