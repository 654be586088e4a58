"""What the dense-task readers (SIIM-ACR, JSRT/SCR, ChestX-Det) return: images with per-structure masks.

Each reader (``siim.read_siim``, ``jsrt.read_jsrt``, ``chestx_det.read_chestx_det``) lists the data set
and checks every annotation it can without decoding pixels (RLE syntax and extent, mask and image sizes
from the file headers, polygon coordinates), so a bad mask is reported when the data set is read. It
returns a ``DenseDataset``; ``dataset.load(record)`` decodes one image and its masks::

    dataset = read_siim("/data/siim")
    image, masks = dataset.load(dataset.records[0])   # (H, W) float32 in [0, 1], {name: (H, W) bool}

Every mask of ``dataset.structures`` is in ``masks`` (all False where the image has none of it), at the
image's size ``record.size``.

The same readers serve pretraining and classification: ``classification(dataset, load_image)`` turns a
``DenseDataset`` into the ``common.Dataset`` of ``ImageRecord``s that ``kmedssl.data.formats.read_dataset``
returns (the record's subject, study, view and labels; official splits from ``record.split``; a loader that
decodes the image only). ``kmedssl.data.formats.read_dense(path, format=None)`` reads any of the dense formats
("siim", "jsrt", "chestx-det", "masks").
"""

import dataclasses
import pathlib
import typing

import numpy as np

from kmedssl.data.formats.common import Dataset
from kmedssl.data.records import ImageRecord


@dataclasses.dataclass(frozen=True)
class DenseRecord:
    """One image of a dense-task data set.

    Attributes:
        image_id: the image's name in its data set (a file stem; a pseudonym for DICOM UIDs).
        path: the image file.
        size: ``(height, width)`` of the image and of its masks as ``DenseDataset.load`` returns them.
        labels: multi-hot (0.0/1.0) over ``DenseDataset.label_names``.
        annotation: what the masks are decoded from (format-specific: RLE strings, mask files, polygons).
        subject_id, study_id: the patient and the study (pseudonymous where the format has them; the image's
            own id when it has nothing else: one image per subject and study).
        view: "PA", "AP", "LATERAL", "LL"; "PA" for data sets of frontal images only.
        split: "train", "val" or "test" from the data set's own split, or "" (none).
        landmarks: ``((x, y, visible), ...)`` in pixels (x = column, y = row, pixel centres at integers), one
            per ``DenseDataset.landmark_names``; ``()`` when the format has no landmarks.
    """

    image_id: str
    path: str
    size: tuple
    labels: tuple = ()
    annotation: typing.Any = None
    subject_id: str = ""
    study_id: str = ""
    view: str = "PA"
    split: str = ""
    landmarks: tuple = ()

    def __post_init__(self):  # one image per subject and study unless the format says otherwise
        if not self.study_id:
            object.__setattr__(self, "study_id", self.image_id)
        if not self.subject_id:
            object.__setattr__(self, "subject_id", self.study_id)


@dataclasses.dataclass
class DenseDataset:
    """The records of one dense-task data set read from disk.

    Attributes:
        format: reader name ("siim", "jsrt", "chestx-det", "masks").
        root: the path that was read.
        records: every readable ``DenseRecord``.
        structures: the mask names every ``load`` returns.
        label_names: names of ``record.labels``.
        skipped: ``(file, problem)`` of every item left out under ``on_error="skip"``.
        loader: ``loader(record) -> (image, masks)``; use ``load``.
        landmark_names: names of ``record.landmarks`` (``()``: no landmarks).
    """

    format: str
    root: pathlib.Path
    records: list
    structures: tuple
    label_names: tuple = ()
    skipped: list = dataclasses.field(default_factory=list)
    loader: typing.Optional[typing.Callable] = None
    landmark_names: tuple = ()

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


def classification(dataset, load_image=None):
    """The ``common.Dataset`` of ``ImageRecord``s of a ``DenseDataset`` (what ``read_dataset`` returns).

    Each record keeps the dense record's ``image_id``, subject, study, view and labels (modality "XR", anatomy
    "chest"); ``splits`` is ``{subject: split}`` when the records carry a split, else None. The loader is
    ``load_image(record.path)``: the image only, as ``dataset.load`` decodes it, no masks; None for image files
    that ``read_image`` decodes (so that ``kmedssl data check`` inspects the files themselves).
    """
    records = [ImageRecord(image_id=r.image_id, subject_id=r.subject_id, study_id=r.study_id, view=r.view,
                           modality="XR", anatomy="chest", labels=tuple(r.labels), path=r.path)
               for r in dataset.records]
    splits = {r.subject_id: r.split for r in dataset.records if r.split} or None
    return Dataset(format=dataset.format, root=dataset.root, records=records, label_names=tuple(dataset.label_names),
                   splits=splits, skipped=list(dataset.skipped),
                   loader=None if load_image is None else lambda record: load_image(record.path))
