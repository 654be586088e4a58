"""JSRT chest radiographs with the SCR (Segmentation in Chest Radiographs) masks of lungs, heart and clavicles.

Layout (the JSRT images and the SCR masks, as distributed)::

    root/images/NAME.IMG            JSRT raw image (without ``images/``: ``root/NAME.IMG``): no header,
                                    big-endian unsigned 16-bit, 12 bits used (0..4095), side x side pixels
                                    with side = sqrt(file size / 2) (JSRT: 2048 x 2048, 8 MiB); a higher
                                    value is darker (the image is shown as ``1 - value / 4095``)
    root/masks/FOLDER/NAME.gif      SCR masks at half the image's side (SCR: 1024 x 1024), non-zero
    root/fold1/masks/FOLDER/...     (>= 128 of 255) inside; FOLDER one of ``SCR_FOLDERS``. The masks may
    root/fold2/masks/FOLDER/...     be in ``masks/`` or split over the SCR folds ``fold1/``, ``fold2/``

``NAME`` is the JSRT case (``JPCLN001``: with a lung nodule, ``JPCNN001``: without). ``read_jsrt(root)``
returns a ``dense.DenseDataset`` with the structures ``lung_right``, ``lung_left``, ``heart``,
``clavicle_right``, ``clavicle_left`` (SCR folder ``"right lung"`` -> ``lung_right``, ...; sides are the
patient's, as in the phantom's names) and one label, ``nodule`` (1.0 for ``JPCLN`` cases). ``load``
returns the image at the masks' size: the mean of each 2 x 2 block of the raw image, as ``1 - value/4095``.
JSRT has one frontal (PA) image per patient: each image is its own subject and study. ``read(root)`` (format
"jsrt" of ``kmedssl.data.formats.read_dataset``) gives the same images as a classification ``Dataset`` with
the label ``nodule`` (``load_image``: the image only).

Problems (``ErrorPolicy``: ``DataError`` "FILE: problem" on one line, or a counted skip): an ``.IMG``
whose size is not that of a square 16-bit image, or above the pixel limit; a missing mask of an image; a
mask that is not an image, or whose size is not half the image's side (named: the mask file, its size and
the size expected). Values above 4095 are refused when the image is loaded. Mask files without an image
are ignored (the SCR masks cover all 247 JSRT images; a subset of the images may be read).
"""

import math
import pathlib

import numpy as np
from PIL import Image

from kmedssl.data.errors import DataError
from kmedssl.data.formats.common import ErrorPolicy
from kmedssl.data.formats.dense import DenseDataset, DenseRecord, binary_mask, classification
from kmedssl.data.images import check_pixel_count

FORMAT = "jsrt"
SCR_FOLDERS = {"right lung": "lung_right", "left lung": "lung_left", "heart": "heart",
               "right clavicle": "clavicle_right", "left clavicle": "clavicle_left"}
STRUCTURES = tuple(SCR_FOLDERS.values())
LABEL_NAMES = ("nodule",)
MASK_ROOTS = ("masks", "fold1/masks", "fold2/masks")
MASK_SUFFIX = ".gif"
MAX_VALUE = 4095  # 12 bits


def looks_like(path):
    """True for a folder with ``.IMG`` files (in ``images/`` or itself) and an SCR ``masks`` folder."""
    path = pathlib.Path(path)
    return bool(_mask_roots(path)) and bool(_image_files(path))


def read(root, on_error="raise"):
    """``read_jsrt`` as a classification ``Dataset`` (``dense.classification``; loads the image only)."""
    return classification(read_jsrt(root, on_error=on_error), load_image)


def load_image(path):
    """The image of a JSRT ``.IMG`` file at the SCR masks' size: the mean of each 2 x 2 block of ``read_raw``."""
    raw = read_raw(path)
    side = raw.shape[0] // 2
    return raw[:2 * side, :2 * side].reshape(side, 2, side, 2).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def read_jsrt(root, on_error="raise"):
    """Read JSRT images with their SCR masks into a ``DenseDataset`` (format "jsrt").

    Raises:
        DataError: no ``.IMG`` file or no masks folder, or (with ``on_error="raise"``) the first bad image
            or mask, naming it.
    """
    root = pathlib.Path(root)
    policy = ErrorPolicy(on_error)
    images, mask_roots = _image_files(root), _mask_roots(root)
    if not images:
        raise DataError(f"{root}: no JSRT .IMG files (in images/ or the folder itself)")
    if not mask_roots:
        raise DataError(f"{root}: no SCR masks folder ({', '.join(MASK_ROOTS)})")
    records = []
    for path in images:
        side = _raw_side(path, policy)
        if side is None:
            continue
        masks = _masks(path.stem, side, mask_roots, policy)
        if masks is None:
            continue
        records.append(DenseRecord(image_id=path.stem, path=str(path), size=(side // 2, side // 2),
                                   labels=(float(path.stem.upper().startswith("JPCLN")),), annotation=masks))
    return DenseDataset(format=FORMAT, root=root, records=records, structures=STRUCTURES,
                        label_names=LABEL_NAMES, skipped=policy.skipped, loader=load_jsrt)


def load_jsrt(record):
    """``(image, masks)`` of a ``read_jsrt`` record, both at the masks' size (half the raw image's side)."""
    image = load_image(record.path)
    height, width = record.size
    masks = {}
    for structure, path in record.annotation.items():
        try:
            with Image.open(path) as file:
                pixels = np.asarray(file.convert("L"))
        except (OSError, ValueError, SyntaxError) as error:
            raise DataError(f"{path}: unreadable or corrupt mask ({error})") from None
        if pixels.shape != (height, width):
            raise DataError(f"{path}: {pixels.shape[1]}x{pixels.shape[0]} mask, expected {width}x{height}")
        masks[structure] = binary_mask(pixels)
    return image, masks


def read_raw(path):
    """A JSRT ``.IMG`` file -> (side, side) float32 in [0, 1], ``1 - value / 4095`` (higher raw = darker).

    Raises:
        DataError: not a square 16-bit raw image, too many pixels, or values above 4095 (naming the file).
    """
    path = pathlib.Path(path)
    side = _raw_side(path, ErrorPolicy("raise"))
    values = np.fromfile(path, dtype=">u2").reshape(side, side)
    if values.max() > MAX_VALUE:
        raise DataError(f"{path}: {int((values > MAX_VALUE).sum())} values above {MAX_VALUE} (not a 12-bit "
                        f"JSRT image)")
    return (1.0 - values.astype(np.float32) / MAX_VALUE).astype(np.float32)


def write_raw(path, image):
    """Write (side, side) values in [0, 1] as a JSRT ``.IMG``: ``round((1 - image) * 4095)``, big-endian."""
    values = np.round((1.0 - np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)) * MAX_VALUE)
    values.astype(">u2").tofile(path)


def _image_files(root):
    folder = root / "images" if (root / "images").is_dir() else root
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.upper() == ".IMG" and not p.name.startswith(".")
                  and p.is_file())


def _mask_roots(root):
    return [root / name for name in MASK_ROOTS if (root / name).is_dir()]


def _raw_side(path, policy):
    """The side of a raw square 16-bit image from its file size; None after reporting a bad size."""
    size = path.stat().st_size
    side = math.isqrt(size // 2)
    if size == 0 or size != 2 * side * side:
        policy.problem(path, f"{size} bytes is not a square 16-bit raw image (JSRT: 2048x2048, 8388608 bytes)")
        return None
    try:
        check_pixel_count(path, side, side)
    except DataError as error:
        policy.problem(path, str(error).split(": ", 1)[1])
        return None
    return side


def _masks(stem, side, mask_roots, policy):
    """``{structure: mask file}`` of one image, each checked (header only) to be half the image's side."""
    found = {}
    for folder, structure in SCR_FOLDERS.items():
        paths = [root / folder / f"{stem}{MASK_SUFFIX}" for root in mask_roots]
        path = next((p for p in paths if p.is_file()), None)
        if path is None:
            policy.problem(paths[0], f"missing {folder!r} mask of {stem} (looked in {len(paths)} masks folders)")
            return None
        try:
            with Image.open(path) as file:
                width, height = file.size
        except (OSError, ValueError, SyntaxError) as error:
            policy.problem(path, f"unreadable or corrupt mask ({error})")
            return None
        if (width, height) != (side // 2, side // 2) or side % 2:
            policy.problem(path, f"{width}x{height} mask for the {side}x{side} image {stem}.IMG (expected "
                                 f"{side // 2}x{side // 2}, half its side, as SCR)")
            return None
        found[structure] = str(path)
    return found
