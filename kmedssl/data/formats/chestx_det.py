"""ChestX-Det: chest radiographs (from NIH ChestX-ray14) with findings outlined as polygons in a JSON file.

Layout (the ChestX-Det release)::

    root/ChestX_Det_train.json      a JSON list, one object per image:
    root/ChestX_Det_test.json         {"file_name": "36199.png", "syms": [s1, s2, ...],
    root/train/36199.png               "boxes": [[x1, y1, x2, y2], ...], "polygons": [[[x, y], ...], ...]}
    root/test/...                   the images of ChestX_Det_SPLIT.json in root/SPLIT/

``syms[k]`` is the finding outlined by ``polygons[k]`` (``boxes`` are not read). At least one of the two
JSON files must be there. ``read_chestx_det(root)`` returns a ``dense.DenseDataset`` whose structures and
labels are the 13 ChestX-Det categories (``CATEGORIES``) followed by any other name found, sorted; a
finding's mask is the union of its polygons, each filled by ``polygons.fill_polygon`` (even-odd rule at
pixel centres, vertices on the pixel-corner grid: ``0 <= x <= width``, ``0 <= y <= height``).
``image_id`` is ``SPLIT/FILE_NAME``; labels are 1.0 for every finding with a polygon. ChestX-Det names no
patient: each image is its own subject and study (frontal, "PA"), and ``record.split`` is its JSON file's split
("train" or "test"). ``read(root)`` (format "chestx-det" of ``kmedssl.data.formats.read_dataset``) gives the
same images as a classification ``Dataset`` with that split (``Dataset.splits``).

Problems (``ErrorPolicy``: ``DataError`` "FILE: problem" on one line, or a counted skip): a JSON file that
does not parse or is not a list; an entry that is not an object with a string ``file_name`` and lists
``syms`` and ``polygons`` of the same length; a repeated ``file_name``; a missing or unreadable image or one
outside the data root; a polygon with fewer than 3 vertices, a vertex that is not two finite numbers, or
a vertex outside the image (named: the JSON file, the image and the polygon's index, e.g.
``ChestX_Det_train.json: 36199.png polygon 2: vertex 5 (1030, 17) is outside the 1024x1024 image``).
"""

import json
import math
import pathlib

import numpy as np
from PIL import Image

from kmedssl.data.errors import DataError
from kmedssl.data.formats.common import DataRoot, ErrorPolicy
from kmedssl.data.formats.dense import DenseDataset, DenseRecord, classification
from kmedssl.data.formats.polygons import fill_polygon
from kmedssl.data.images import read_image

FORMAT = "chestx-det"
SPLITS = ("train", "test")
CATEGORIES = ("Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "Diffuse Nodule", "Effusion",
              "Emphysema", "Fibrosis", "Fracture", "Mass", "Nodule", "Pleural Thickening", "Pneumothorax")


def json_name(split):
    """The annotation file of ``split``: ``ChestX_Det_train.json`` / ``ChestX_Det_test.json``."""
    return f"ChestX_Det_{split}.json"


def looks_like(path):
    """True for a folder holding ``ChestX_Det_train.json`` or ``ChestX_Det_test.json``."""
    return any((pathlib.Path(path) / json_name(split)).is_file() for split in SPLITS)


def read(root, on_error="raise"):
    """``read_chestx_det`` as a classification ``Dataset`` (``dense.classification``: image files, ``read_image``)."""
    return classification(read_chestx_det(root, on_error=on_error))


def read_chestx_det(root, on_error="raise"):
    """Read a ChestX-Det folder into a ``DenseDataset`` (format "chestx-det").

    Raises:
        DataError: no annotation file, an annotation file that is not a JSON list, or (with
            ``on_error="raise"``) the first bad entry, image or polygon, naming the file.
    """
    root = pathlib.Path(root)
    policy = ErrorPolicy(on_error)
    tables = [(split, root / json_name(split)) for split in SPLITS if (root / json_name(split)).is_file()]
    if not tables:
        raise DataError(f"{root}: no {' or '.join(json_name(s) for s in SPLITS)} (the ChestX-Det layout)")
    data_root, entries = DataRoot(root), []
    for split, table in tables:
        entries += [(split, table, entry) for entry in _entries(table, root / split, data_root, policy)]
    names = CATEGORIES + tuple(sorted({sym for *_, (_, _, syms, _) in entries for sym in syms} - set(CATEGORIES)))
    records = []
    for split, table, (path, size, syms, polygons) in entries:
        labels = tuple(float(name in syms) for name in names)
        records.append(DenseRecord(image_id=f"{split}/{path.name}", path=str(path), size=size, labels=labels,
                                   annotation=tuple(zip(syms, polygons)), split=split))
    return DenseDataset(format=FORMAT, root=root, records=records, structures=names, label_names=names,
                        skipped=policy.skipped, loader=_loader(names))


def _loader(names):
    def load(record):
        """``(image, {finding: mask})``: the image and the union of each finding's filled polygons."""
        image = read_image(record.path)
        height, width = record.size
        if image.shape != (height, width):
            raise DataError(f"{record.path}: decoded {image.shape[1]}x{image.shape[0]}, the header says "
                            f"{width}x{height}")
        masks = {name: np.zeros((height, width), dtype=bool) for name in names}
        for sym, polygon in record.annotation:
            masks[sym] |= fill_polygon(polygon, height, width)
        return image, masks
    return load


def _entries(table, folder, data_root, policy):
    """The checked ``(image path, (height, width), syms, polygons)`` of one annotation file."""
    try:
        with open(table, encoding="utf-8") as handle:
            items = json.load(handle)
    except (OSError, ValueError) as error:
        raise DataError(f"{table}: not readable as JSON ({type(error).__name__}: {str(error)[:80]})") from None
    if not isinstance(items, list):
        raise DataError(f"{table}: expected a JSON list of images, found {type(items).__name__}")
    seen, found = set(), []
    for number, item in enumerate(items):
        where = f"entry {number}"
        if not (isinstance(item, dict) and isinstance(item.get("file_name"), str)
                and isinstance(item.get("syms"), list) and isinstance(item.get("polygons"), list)
                and all(isinstance(sym, str) for sym in item["syms"])):
            policy.problem(table, f"{where}: expected an object with a string file_name and lists syms and "
                                  f"polygons")
            continue
        name = item["file_name"]
        if len(item["syms"]) != len(item["polygons"]):
            policy.problem(table, f"{name}: {len(item['syms'])} syms but {len(item['polygons'])} polygons")
            continue
        if name in seen:
            policy.problem(table, f"{name}: listed twice")
            continue
        seen.add(name)
        path = folder / name
        size = _image_size(path, data_root, policy)
        if size is None:
            continue
        polygons = _polygons(table, name, item["polygons"], size, policy)
        if polygons is not None:
            found.append((path, size, tuple(item["syms"]), polygons))
    return found


def _image_size(path, data_root, policy):
    """``(height, width)`` from the image's header; None after reporting a problem."""
    problem = data_root.problem(path)
    if problem is None and not path.is_file():
        problem = "image file not found"
    if problem is None:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except (OSError, ValueError, SyntaxError) as error:
            problem = f"unreadable or corrupt image ({error})"
    if problem is not None:
        policy.problem(path, problem)
        return None
    return height, width


def _polygons(table, name, polygons, size, policy):
    """The polygons as tuples of ``(x, y)`` floats, each checked; None after reporting the first bad one."""
    height, width = size
    checked = []
    for index, polygon in enumerate(polygons):
        where = f"{name} polygon {index}"
        if not isinstance(polygon, list) or len(polygon) < 3:
            policy.problem(table, f"{where}: expected a list of at least 3 [x, y] vertices")
            return None
        vertices = []
        for number, vertex in enumerate(polygon):
            if not (isinstance(vertex, (list, tuple)) and len(vertex) == 2
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                            for v in vertex)):
                policy.problem(table, f"{where}: vertex {number} is not two finite numbers [x, y]")
                return None
            x, y = vertex
            if not (0 <= x <= width and 0 <= y <= height):
                policy.problem(table, f"{where}: vertex {number} ({x:g}, {y:g}) is outside the {width}x{height} "
                                      f"image (0 <= x <= {width}, 0 <= y <= {height})")
                return None
            vertices.append((float(x), float(y)))
        checked.append(tuple(vertices))
    return tuple(checked)
