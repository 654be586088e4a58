"""A generic image + mask folder (the phantom's ``--layout masks``; any data set with one PNG mask per
structure and image).

Layout::

    root/images/NAME.png                  the images (``folder.IMAGE_SUFFIXES``; sub-folders allowed)
    root/masks/STRUCTURE/NAME.png         one folder per structure; for every image a mask of the image's
                                          size, inside where >= half the type's maximum (8-bit: >= 128)
    root/index.csv                        optional: the folder format's CSV (path, subject, study, view,
                                          split, label_NAME ...; ``folder``), paths ``images/NAME.png``
    root/landmarks.csv                    optional: path, landmark, x, y, visible (0/1); x = column,
                                          y = row in pixels, pixel centres at integers

``NAME`` is the image's path below ``images/`` (the mask of ``images/a/b.png`` is ``masks/STRUCTURE/a/b.png``).
Structures are the sorted sub-folders of ``masks/``. With ``index.csv`` the images, their subject, study,
view, labels and split are those of the folder reader (``folder.read``); without it, every file below
``images/`` is an image, its own subject and study, view unknown (""), no labels. Landmark names are taken
in order of first appearance in ``landmarks.csv``; an image without a row for a landmark has it not visible
(NaN coordinates).

``read_masks(root)`` returns a ``dense.DenseDataset`` (format "masks") with ``landmark_names`` and each
record's ``landmarks``; ``read(root)`` the classification ``Dataset`` of the same images (format "masks"
of ``kmedssl.data.formats.read_dataset``).

Problems (``ErrorPolicy``: ``DataError`` "FILE: problem" on one line, or a counted skip that leaves the
image out): a missing mask (named: the mask file that should be there); a mask whose size is not the
image's (``masks/heart/000001.png: 32x32 mask for the 64x64 image images/000001.png``); an unreadable image
or mask header; in ``landmarks.csv`` a path that is no image of the data set, a repeated (path, landmark),
a coordinate that is not a finite number, ``visible`` other than 0/1, or a visible landmark outside the
image (``landmarks.csv: line 7: landmark carina (70, 3) is outside the 64x64 image images/000000.png``).
"""

import math
import pathlib

import numpy as np
from PIL import Image

from kmedssl.data.errors import DataError
from kmedssl.data.formats import folder
from kmedssl.data.formats.chexpert_labels import read_csv
from kmedssl.data.formats.common import ErrorPolicy
from kmedssl.data.formats.dense import DenseDataset, DenseRecord, binary_mask, classification
from kmedssl.data.images import read_image

FORMAT = "masks"
IMAGES, MASKS, INDEX, LANDMARKS = "images", "masks", "index.csv", "landmarks.csv"
LANDMARK_COLUMNS = ("path", "landmark", "x", "y", "visible")


def looks_like(path):
    """True for a folder with ``images/`` holding image files and ``masks/`` holding structure folders."""
    path = pathlib.Path(path)
    try:
        if not ((path / IMAGES).is_dir() and (path / MASKS).is_dir()):
            return False
        if not any(e.is_dir() for e in folder.visible_entries(path / MASKS)):
            return False
        return any(True for _ in folder.walk_images(path / IMAGES, ErrorPolicy("skip")))
    except (DataError, OSError):
        return False


def read(root, on_error="raise"):
    """``read_masks`` as a classification ``Dataset`` (``dense.classification``: image files, ``read_image``)."""
    return classification(read_masks(root, on_error=on_error))


def read_masks(root, on_error="raise"):
    """Read an image + mask folder into a ``DenseDataset`` (format "masks").

    Raises:
        DataError: no ``images/`` or ``masks/`` folder, no structure folder, an unreadable ``index.csv`` or
            ``landmarks.csv``, or (with ``on_error="raise"``) the first bad image, mask or landmark row.
    """
    root = pathlib.Path(root)
    policy = ErrorPolicy(on_error)
    for name in (IMAGES, MASKS):
        if not (root / name).is_dir():
            raise DataError(f"{root}: no {name}/ folder (the image + mask layout: images/, masks/STRUCTURE/)")
    structures = tuple(e.name for e in folder.visible_entries(root / MASKS) if e.is_dir())
    if not structures:
        raise DataError(f"{root / MASKS}: no structure folders (masks/STRUCTURE/NAME.png)")
    images, label_names = _images(root, policy)
    checked = []
    for record in images:
        found = _checked(root, record, structures, policy)
        if found is not None:
            checked.append(found)
    landmark_names, points = _landmarks(root, {item[0].image_id: item for item in checked},
                                        {r.image_id for r in images}, policy)
    records = []
    for record, size, annotation in checked:
        if record.image_id in points.bad:
            continue
        mine = points.get(record.image_id, {})
        landmarks = tuple(mine.get(name, (math.nan, math.nan, False)) for name in landmark_names)
        records.append(DenseRecord(image_id=record.image_id, path=record.path, size=size, labels=record.labels,
                                   annotation=annotation, subject_id=record.subject_id, study_id=record.study_id,
                                   view=record.view, split=record.split, landmarks=landmarks))
    return DenseDataset(format=FORMAT, root=root, records=records, structures=structures, label_names=label_names,
                        skipped=policy.skipped, loader=load_masks, landmark_names=landmark_names)


def load_masks(record):
    """``(image, {structure: mask})`` of a ``read_masks`` record; each mask decoded with ``dense.binary_mask``."""
    image = read_image(record.path)
    height, width = record.size
    if image.shape != (height, width):
        raise DataError(f"{record.path}: decoded {image.shape[1]}x{image.shape[0]}, the header says {width}x{height}")
    masks = {}
    for structure, path in record.annotation.items():
        try:
            with Image.open(path) as file:
                pixels = np.asarray(file)
        except (OSError, ValueError, SyntaxError) as error:
            raise DataError(f"{path}: unreadable or corrupt mask ({error})") from None
        if pixels.shape[:2] != (height, width):
            raise DataError(f"{path}: {pixels.shape[1]}x{pixels.shape[0]} mask for the {width}x{height} image "
                            f"{record.image_id}")
        masks[structure] = binary_mask(pixels)
    return image, masks


# === Images ===


class _Image:
    """What the dense record needs of one image before its masks are checked."""

    def __init__(self, image_id, path, subject_id="", study_id="", view="", labels=(), split=""):
        self.image_id, self.path, self.subject_id, self.study_id = image_id, str(path), subject_id, study_id
        self.view, self.labels, self.split = view, tuple(labels), split


def _images(root, policy):
    """``([_Image], label_names)``: from ``index.csv`` (the folder reader) or every file below ``images/``."""
    if (root / INDEX).is_file():
        table = folder.read(root / INDEX, on_error=policy.on_error)
        policy.skipped += table.skipped
        splits = table.splits or {}
        images = [_Image(r.image_id, r.path, r.subject_id, r.study_id, r.view, r.labels, splits.get(r.subject_id, ""))
                  for r in table.records]
        return images, tuple(table.label_names)
    images = []
    for parts, path in folder.walk_images(root / IMAGES, policy):
        problem = folder.file_problem(path)
        if problem is not None:
            policy.problem(path, problem)
            continue
        images.append(_Image("/".join((IMAGES,) + parts), path))
    if not images:
        raise DataError(f"{root / IMAGES}: no image files ({', '.join(folder.IMAGE_SUFFIXES)})")
    return images, ()


def _header_size(path):
    """``(height, width)`` from an image file's header; raises ``_Problem``."""
    try:
        with Image.open(path) as file:
            width, height = file.size
    except FileNotFoundError:
        raise _Problem("file not found") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise _Problem(f"unreadable or corrupt image ({error})") from None
    return height, width


class _Problem(Exception):
    """A file that cannot be used (the message says why, without the file's name)."""


def _checked(root, record, structures, policy):
    """``(record, (height, width), {structure: mask file})`` with every mask's header checked; None after
    reporting the first problem."""
    image = pathlib.Path(record.path)
    try:
        size = _header_size(image)
    except _Problem as problem:
        policy.problem(image, str(problem))
        return None
    try:
        below = image.resolve().relative_to((root / IMAGES).resolve())
    except ValueError:
        policy.problem(image, f"not below {root / IMAGES} (masks are found by the image's path below images/)")
        return None
    annotation = {}
    for structure in structures:
        mask = root / MASKS / structure / below
        if not mask.is_file():
            policy.problem(mask, f"missing {structure} mask of {record.image_id}")
            return None
        try:
            mask_size = _header_size(mask)
        except _Problem as problem:
            policy.problem(mask, f"{problem} (a mask)")
            return None
        if mask_size != size:
            policy.problem(mask, f"{mask_size[1]}x{mask_size[0]} mask for the {size[1]}x{size[0]} image "
                                 f"{record.image_id}")
            return None
        annotation[structure] = str(mask)
    return record, size, annotation


# === Landmarks ===


class _Points(dict):
    """``{image_id: {landmark: (x, y, visible)}}`` with ``bad``: the images with a bad landmark row."""

    def __init__(self):
        super().__init__()
        self.bad = set()


def _landmarks(root, images, left_out, policy):
    """``(landmark names, _Points)`` from ``landmarks.csv`` (``((), _Points())`` without it); rows of the
    images in ``left_out`` but not in ``images`` (already skipped) are passed over."""
    table = root / LANDMARKS
    points = _Points()
    if not table.is_file():
        return (), points
    names = {}
    for line, row in read_csv(table, LANDMARK_COLUMNS, policy):
        if row["path"] in left_out and row["path"] not in images:
            continue
        try:
            image_id, name, point = _landmark_row(row, images)
        except _Problem as problem:
            policy.problem(table, f"line {line}: {problem}")
            if row["path"] in images:
                points.bad.add(row["path"])
            continue
        mine = points.setdefault(image_id, {})
        if name in mine:
            policy.problem(table, f"line {line}: landmark {name} of {image_id} is listed twice")
            points.bad.add(image_id)
            continue
        names.setdefault(name, len(names))
        mine[name] = point
    return tuple(names), points


def _landmark_row(row, images):
    image_id, name = row["path"], row["landmark"]
    if image_id not in images:
        raise _Problem(f"path {image_id!r} is no image of the data set")
    if not name:
        raise _Problem("blank landmark name")
    try:
        x, y = float(row["x"]), float(row["y"])
    except ValueError:
        raise _Problem(f"landmark {name}: x, y ({row['x']!r}, {row['y']!r}) are not numbers") from None
    if row["visible"] not in ("0", "1"):
        raise _Problem(f"landmark {name}: visible is {row['visible']!r}, expected 0 or 1")
    visible = row["visible"] == "1"
    if not (math.isfinite(x) and math.isfinite(y)):
        if visible:
            raise _Problem(f"landmark {name}: a visible landmark needs finite x, y (received {row['x']}, {row['y']})")
        return image_id, name, (math.nan, math.nan, False)
    _, size, _ = images[image_id]
    height, width = size
    if visible and not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
        raise _Problem(f"landmark {name} ({x:g}, {y:g}) is outside the {width}x{height} image {image_id}")
    return image_id, name, (x, y, visible)
