"""MedMNIST (Yang et al. 2023) ``.npz`` files, e.g. ``chestmnist.npz`` or ``chestmnist_224.npz``.

``root`` is the ``.npz`` file, or a folder holding exactly one. The file holds six arrays::

    train_images, val_images, test_images    (N, H, W) or (N, H, W, 3) uint8
    train_labels, val_labels, test_labels    (N, 1) integer class index (multi-class), or
                                             (N, K) 0/1 with K > 1 (multi-label, e.g. ChestMNIST's 14)

Records: one per image, ``image_id`` = ``"split/index"`` (e.g. ``"val/17"``), ``path`` = the ``.npz`` file.
MedMNIST has no patient ids, so every image is its own subject and study (``subject_id`` = ``study_id`` =
``image_id``), and the official split goes to ``Dataset.splits`` (``{image_id: "train"|"val"|"test"}``).
Labels: multi-class -> one-hot over ``max label + 1`` classes (over all splits; a class index is below
``MAX_CLASSES``); multi-label -> the rows as given. Label names are ``label_0 ... label_{K-1}`` unless the
file name (up to an ``_SIZE`` suffix) is a known set (``KNOWN_SETS``: ChestMNIST's 14 ChestX-ray14
findings, modality "XR", anatomy "chest"); otherwise modality and anatomy are "" and view is always "".

Images are not read by ``read``: only the ``.npy`` headers are checked, before anything is loaded (each
array must fit in its zip member and in ``MAX_ARRAY_BYTES``, each image in the image gate's
``MAX_PIXELS``). ``Dataset.loader`` loads a split's image array on first use (the whole array, once per
process: ~5.6 GB for ChestMNIST at 224 px) and returns ``(H, W)`` float32 in [0, 1] (uint8 / 255; RGB ->
luma). Nothing is unpickled (``allow_pickle=False``).

Problems: a missing key, a wrong shape or dtype, an array larger than its member or ``MAX_ARRAY_BYTES``,
images and labels of different lengths, a known set with the wrong number of labels, or a file that is not
a valid ``.npz`` always raise ``DataError`` naming the file and key (skipping them would drop a whole
split). A label row that is out of range (a negative class or one of ``MAX_CLASSES`` or more, a
multi-label value other than 0/1) is a problem of the ``ErrorPolicy`` (raise, or skip that image and count
it).
"""

import pathlib
import zipfile

import numpy as np

from kmedssl.data.errors import DataError
from kmedssl.data.formats.common import DataRoot, Dataset, ErrorPolicy
from kmedssl.data.images import check_pixel_count, to_unit_grey
from kmedssl.data.npz import ARCHIVE_ERRORS, array_headers, declared_size_problem
from kmedssl.data.records import ImageRecord

FORMAT = "medmnist"
SPLITS = ("train", "val", "test")
KEYS = tuple(f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels"))
CHESTMNIST_LABELS = ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
                     "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia")
# File name (lower case, without an "_SIZE" suffix) -> (label names, multi-label, modality, anatomy).
KNOWN_SETS = {"chestmnist": (CHESTMNIST_LABELS, True, "XR", "chest")}
# The largest array read: twice MedMNIST's largest (ChestMNIST's 224-px training images, 3.9 GB).
MAX_ARRAY_BYTES = 2**33
# Multi-class labels are class indices below this (MedMNIST's 2-D sets have at most 11 classes); a larger
# value is a bad label row, not a class (a one-hot table over 2**31 classes would not fit in memory).
MAX_CLASSES = 1000


def looks_like(path):
    """True for a ``.npz`` file (or a folder with exactly one) holding the six MedMNIST arrays."""
    try:
        with zipfile.ZipFile(_npz_file(pathlib.Path(path))) as archive:
            names = set(archive.namelist())
    except (DataError, *ARCHIVE_ERRORS):
        return False
    return all(f"{key}.npy" in names for key in KEYS)


def read(root, on_error="raise"):
    """Read a MedMNIST ``.npz`` into a ``Dataset`` (format "medmnist") with its official split.

    Raises:
        DataError: no or several ``.npz`` files, a missing key, a wrong shape or dtype (naming file and
            key), or (with ``on_error="raise"``) the first bad label row.
    """
    root = pathlib.Path(root)
    file = _npz_file(root)
    policy = ErrorPolicy(on_error)
    headers = _headers(file)
    labels = _labels(file, headers)
    set_name = file.stem.lower().split("_")[0]
    multi_label = labels["train"].shape[1] > 1
    label_names = _label_names(file, labels, multi_label, set_name)
    modality, anatomy = KNOWN_SETS[set_name][2:] if set_name in KNOWN_SETS else ("", "")
    records, splits = [], {}
    for split in SPLITS:
        vectors, valid = _label_vectors(labels[split], len(label_names), multi_label)
        for index in range(len(vectors)):
            if not valid[index]:
                expected = "0 or 1" if multi_label else (f"a class index in 0..{len(label_names) - 1} (at most "
                                                         f"{MAX_CLASSES} classes are read)")
                policy.problem(file, f"{split}_labels row {index}: label {labels[split][index].tolist()} is not "
                                     f"{expected}")
                continue
            image_id = f"{split}/{index}"
            records.append(ImageRecord(image_id=image_id, subject_id=image_id, study_id=image_id, view="",
                                       modality=modality, anatomy=anatomy, labels=tuple(vectors[index]),
                                       path=str(file)))
            splits[image_id] = split
    return Dataset(format=FORMAT, root=root, records=records, label_names=label_names, splits=splits,
                   skipped=policy.skipped, loader=NpzImages(file))


class NpzImages:
    """``loader(record) -> (H, W) float32 in [0, 1]``: image ``record.image_id = "split/index"`` of one file.

    Each split's image array is loaded on first use and kept; the cache is not pickled, so the loader can
    be sent to worker processes cheaply (each loads what it needs).
    """

    def __init__(self, file):
        self.file = str(file)
        self._arrays = {}

    def __call__(self, record):
        split, _, index = record.image_id.partition("/")
        if record.path != self.file or split not in SPLITS or not index.isdigit():
            raise DataError(f"{self.file}: record {record.image_id!r} of {record.path} is not an image of it")
        images = self._arrays.get(split)
        if images is None:
            images = self._arrays[split] = self._load(f"{split}_images")
        if int(index) >= len(images):
            raise DataError(f"{self.file}: {split}_images has {len(images)} images, no index {index}")
        return to_unit_grey(images[int(index)], f"{self.file}[{split}_images][{index}]")

    def _load(self, key):
        try:
            with np.load(self.file, allow_pickle=False) as arrays:
                return arrays[key]
        except ARCHIVE_ERRORS as error:
            raise DataError(f"{self.file}: cannot load {key!r} ({type(error).__name__}: {error})") from None

    def __getstate__(self):
        return {"file": self.file, "_arrays": {}}


# === File and array checks ===


def _npz_file(root):
    if root.is_file():
        if root.suffix.lower() != ".npz":
            raise DataError(f"{root}: expected a MedMNIST .npz file")
        return root
    if not root.is_dir():
        raise DataError(f"{root}: no such file or directory")
    found = sorted(p for p in root.iterdir() if p.suffix.lower() == ".npz" and not p.name.startswith("."))
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) or "none"
        raise DataError(f"{root}: expected exactly one .npz file, found {listed}; pass the file itself")
    problem = DataRoot(root).problem(found[0])
    if problem is not None:
        raise DataError(f"{found[0]}: {problem}")
    return found[0]


def _headers(file):
    """``{key: (shape, dtype)}`` of the six arrays, read from the ``.npy`` headers (no data loaded), each
    checked against its zip member's size and ``MAX_ARRAY_BYTES``."""
    try:
        declared = array_headers(file)
    except ARCHIVE_ERRORS as error:
        raise DataError(f"{file}: not a readable .npz archive ({type(error).__name__}: {error})") from None
    headers = {}
    for key in KEYS:
        if key not in declared:
            raise DataError(f"{file}: missing array {key!r} (a MedMNIST .npz holds {', '.join(KEYS)})")
        shape, dtype, stored = declared[key]
        problem = declared_size_problem(key, shape, dtype, stored, MAX_ARRAY_BYTES)
        if problem:
            raise DataError(f"{file}: {problem}")
        headers[key] = (shape, dtype)
    for split in SPLITS:
        _check_images(file, f"{split}_images", *headers[f"{split}_images"])
    return headers


def _check_images(file, key, shape, dtype):
    if dtype != np.uint8:
        raise DataError(f"{file}: {key!r} has dtype {dtype}, expected uint8")
    grey = len(shape) == 3
    rgb = len(shape) == 4 and shape[3] == 3
    if not (grey or rgb) or min(shape[1:3], default=0) < 1:
        raise DataError(f"{file}: {key!r} has shape {shape}, expected (N, H, W) or (N, H, W, 3) "
                        f"(3-D MedMNIST volumes are not supported)")
    check_pixel_count(f"{file}[{key}]", shape[2], shape[1])


def _labels(file, headers):
    """``{split: (N, K) integer array}``, checked against the images' lengths and each other's widths."""
    labels = {}
    try:
        with np.load(file, allow_pickle=False) as arrays:
            for split in SPLITS:
                labels[split] = arrays[f"{split}_labels"]
    except ARCHIVE_ERRORS as error:
        raise DataError(f"{file}: cannot load the labels ({type(error).__name__}: {error})") from None
    for split, array in labels.items():
        key, count = f"{split}_labels", headers[f"{split}_images"][0][0]
        if array.ndim != 2 or array.shape[1] < 1:
            raise DataError(f"{file}: {key!r} has shape {array.shape}, expected (N, 1) or (N, K)")
        if not np.issubdtype(array.dtype, np.integer):
            raise DataError(f"{file}: {key!r} has dtype {array.dtype}, expected integers")
        if array.shape[0] != count:
            raise DataError(f"{file}: {key!r} has {array.shape[0]} rows but {split}_images has {count} images")
    widths = {split: array.shape[1] for split, array in labels.items()}
    if len(set(widths.values())) > 1:
        raise DataError(f"{file}: the label arrays have different widths {widths}")
    return labels


def _label_names(file, labels, multi_label, set_name):
    if multi_label:
        count = labels["train"].shape[1]
    else:  # one more than the largest class index below MAX_CLASSES (larger ones are bad rows)
        indices = [array[(array >= 0) & (array < MAX_CLASSES)] for array in labels.values()]
        count = 1 + max((int(found.max()) for found in indices if found.size), default=0)
    if set_name not in KNOWN_SETS:
        return tuple(f"label_{k}" for k in range(count))
    names, known_multi_label = KNOWN_SETS[set_name][:2]
    if multi_label != known_multi_label or (multi_label and count != len(names)) or count > len(names):
        kind = f"{len(names)} labels per image" if known_multi_label else f"class indices below {len(names)}"
        raise DataError(f"{file}: the file name says {set_name} ({kind}), but the label arrays have "
                        f"{labels['train'].shape[1]} columns and {count} labels")
    return names


def _label_vectors(array, count, multi_label):
    """(N, K) integer labels -> (N rows of ``count`` floats, (N,) bool valid): multi-hot rows as given, or
    the one-hot of the class index; a row is invalid (its vector None) when a value is out of range."""
    if multi_label:
        valid = np.isin(array, (0, 1)).all(axis=1)
        return array.astype(float).tolist(), valid
    index = array[:, 0]
    valid = (index >= 0) & (index < count)
    # One shared tuple per class present: memory grows with the data, not with the label values.
    one_hot = {c: tuple(float(k == c) for k in range(count)) for c in np.unique(index[valid]).tolist()}
    return [one_hot.get(c) for c in index.tolist()], valid
