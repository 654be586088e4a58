"""A generic folder of images, or a CSV table that lists them (SPEC §4 "a generic folder/CSV").

Two layouts are read.

**CSV** — ``root`` is a ``.csv``/``.csv.gz`` file, or a folder holding exactly one of ``labels.csv``
and ``index.csv``. Column names are matched exactly (lower case)::

    path        required: the image file, relative to the CSV's folder (an absolute path must lead there)
    subject     optional: patient id (default: the study id)
    study       optional: study id (default: the image's own path, i.e. one study per image)
    view        optional: PA, AP, LATERAL, LL, AXIAL, CORONAL, SAGITTAL (any case) or blank
    modality    optional: upper-cased; MRI -> MR, CR/DX -> XR, PET -> PT (``MODALITY_ALIASES``)
    anatomy     optional: lower-cased
    sex, age    optional: F/M/female/male/blank; a non-negative number or blank
    split       optional: train, val/validate, test -> ``Dataset.splits`` (by subject)
    label_NAME  every column whose name starts with ``label_`` is a label named NAME, in column order;
                1.0 -> 1; 0.0, -1.0, blank -> 0 (``collapse_label``). No other column is a label.

Any other column is ignored. ``image_id`` is the ``path`` cell as written.

**Plain folder** — image files (``IMAGE_SUFFIXES``, hidden names skipped) either all directly inside
``root`` (``root/*.png``: no labels) or all exactly one sub-folder deep (``root/CLASS/*.png``: one class per
sub-folder, one-hot labels over the sorted sub-folder names). Each image is its own subject and study
(``image_id`` = its path relative to ``root``); view, modality and anatomy are unknown (""). Images at
other depths, or at both, raise ``DataError``: write a ``labels.csv`` for any other layout.

Data root: every image must lie in the CSV's folder (CSV layout) or in ``root`` (plain folder) once ``..``
and symbolic links are resolved (``common.DataRoot``); a path or link leading out, a symlink loop, and a
link to a folder it is in are problems.

Problems (``ErrorPolicy``: raise ``DataError`` naming the file and line, or skip and count): a CSV row with
a blank or repeated path, a path outside the data root, a missing or empty (0-byte) image, an unknown
view, a label other than 1.0/0.0/-1.0/blank, a bad sex/age/split, a blank subject/study cell, a subject in
several splits; an empty image file or a link out of the data root in a plain folder. Images are not
decoded here (that would be too slow for real archives): corrupt or truncated files, and images the image
gate refuses, raise ``DataError`` from ``read_image`` when they are loaded.
"""

import math
import os
import pathlib

from kmedssl.data.errors import DataError
from kmedssl.data.formats.chexpert_labels import collapse_label, csv_header, official_splits, read_csv
from kmedssl.data.formats.common import DataRoot, Dataset, ErrorPolicy
from kmedssl.data.records import FRONTAL_VIEWS, LATERAL_VIEWS, ImageRecord

FORMAT = "folder"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
CSV_NAMES = ("labels.csv", "index.csv")
KNOWN_VIEWS = FRONTAL_VIEWS + LATERAL_VIEWS + ("AXIAL", "CORONAL", "SAGITTAL")
MODALITY_ALIASES = {"MRI": "MR", "CR": "XR", "DX": "XR", "PET": "PT"}
LABEL_PREFIX = "label_"
OPTIONAL_COLUMNS = ("subject", "study", "view", "modality", "anatomy", "sex", "age", "split")
SPLIT_NAMES = {"train": "train", "val": "val", "validate": "val", "test": "test"}
SEXES = {"": "", "F": "F", "FEMALE": "F", "M": "M", "MALE": "M"}


def looks_like(path):
    """True for a CSV with a ``path`` column, a folder with one ``labels.csv``/``index.csv``, or a folder
    with image files directly in it or in its direct sub-folders."""
    path = pathlib.Path(path)
    try:
        table = _csv_file(path)
        if table is not None:
            header = csv_header(table)
            return header is not None and "path" in header
        if not path.is_dir():
            return False
        top = visible_entries(path)
        below = (e for d in top if d.is_dir() for e in visible_entries(d.path))
        return any(e.is_file() and is_image_name(e.name) for e in top) or any(
            e.is_file() and is_image_name(e.name) for e in below)
    except (DataError, OSError):
        return False


def read(root, on_error="raise"):
    """Read a CSV table or a plain folder of images into a ``Dataset`` (format "folder").

    Raises:
        DataError: unreadable CSV, missing ``path`` column, an unsupported folder layout, or (with
            ``on_error="raise"``) the first bad row or file, naming it.
    """
    root = pathlib.Path(root)
    policy = ErrorPolicy(on_error)
    table = _csv_file(root)
    if table is not None:
        return _read_table(root, table, policy)
    if not root.is_dir():
        raise DataError(f"{root}: expected a .csv file or a folder of images (folder format)")
    return _read_tree(root, policy)


# === Helpers shared with the RadImageNet reader ===


def is_image_name(name):
    """True for a visible file name with an image suffix (``IMAGE_SUFFIXES``, any case)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def modality_code(text):
    """A modality name as recorded: upper case, with the aliases of ``MODALITY_ALIASES`` applied."""
    code = text.strip().upper()
    return MODALITY_ALIASES.get(code, code)


def visible_entries(directory):
    """The ``os.DirEntry`` items of ``directory`` whose names do not start with ".", sorted by name.

    Raises:
        DataError: the folder cannot be listed.
    """
    try:
        with os.scandir(directory) as entries:
            return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as error:
        raise DataError(f"{directory}: cannot list the folder ({error.strerror or error})") from None


def walk_images(root, policy):
    """Yield ``(parts, path)`` for every visible image file below ``root``, in sorted order, where
    ``parts`` are the path components relative to ``root`` (the last one is the file name).

    A symbolic link (to an image or a folder) is followed only when it stays inside ``root`` (``DataRoot``)
    and does not lead back to a folder it is in; otherwise it is reported to ``policy`` and passed over.

    Raises:
        DataError: a folder cannot be listed, or (``on_error="raise"``) a link leads out of ``root`` or loops.
    """
    data_root = DataRoot(root)

    def walk(directory, parts, above):
        for entry in visible_entries(directory):
            real = os.path.join(above[-1], entry.name)
            if entry.is_symlink():
                if not (is_image_name(entry.name) or os.path.isdir(entry.path)):
                    continue
                real = os.path.realpath(entry.path)
                problem = data_root.problem(entry.path) or (
                    "symbolic link to a folder it is in (a loop)" if real in above else None)
                if problem is not None:
                    policy.problem(entry.path, problem)
                    continue
            if entry.is_dir():
                yield from walk(entry.path, parts + (entry.name,), above + (real,))
            elif is_image_name(entry.name):
                yield parts + (entry.name,), entry.path

    yield from walk(os.fspath(root), (), (data_root.real,))


def file_problem(path):
    """Why an image file cannot be used without decoding it (missing, unreadable, 0 bytes), or None."""
    try:
        size = os.stat(path).st_size
    except OSError as error:
        return f"image file cannot be read ({error.strerror or error})"
    return "empty image file (0 bytes)" if size == 0 else None


# === CSV layout ===


def _csv_file(root):
    """The CSV to read: ``root`` itself, or the one ``labels.csv``/``index.csv`` in it; None for a folder
    without either."""
    if root.is_file():
        if not root.name.lower().endswith((".csv", ".csv.gz")):
            raise DataError(f"{root}: expected a .csv or .csv.gz file or a folder (folder format)")
        return root
    if not root.is_dir():
        return None
    found = [root / name for name in CSV_NAMES if (root / name).is_file()]
    if len(found) > 1:
        raise DataError(f"{root}: both labels.csv and index.csv are present; keep exactly one")
    return found[0] if found else None


def _read_table(root, table, policy):
    header = csv_header(table)
    if header is None:
        raise DataError(f"{table}: unreadable CSV table")
    label_columns = tuple(name for name in header if name.startswith(LABEL_PREFIX))
    if any(name == LABEL_PREFIX for name in label_columns):
        raise DataError(f"{table}: a column is named {LABEL_PREFIX!r} without a label name after the prefix")
    optional = tuple(name for name in OPTIONAL_COLUMNS if name in header)
    records, seen, assignments = [], {}, {}
    data_root = DataRoot(table.parent)
    for line, row in read_csv(table, ("path",), policy, optional=optional + label_columns):
        labels = _labels(table, line, row, label_columns, policy)
        if labels is None:
            continue
        try:
            record, split = _row_record(table, row, labels, seen, data_root)
        except _RowProblem as problem:
            policy.problem(table, f"line {line}: {problem}")
            continue
        seen[record.image_id] = line
        records.append(record)
        if split is not None:
            assignments.setdefault(record.subject_id, {}).setdefault(split, f"line {line}")
    splits = None
    if "split" in header:
        records, splits = official_splits(records, assignments, table, policy)
    names = tuple(name[len(LABEL_PREFIX):] for name in label_columns)
    return Dataset(format=FORMAT, root=root, records=records, label_names=names, splits=splits,
                   skipped=policy.skipped)


def _labels(table, line, row, label_columns, policy):
    """The row's collapsed labels, or None after reporting its first bad value (one problem per row)."""
    labels = []
    for name in label_columns:
        value = collapse_label(row[name], table, line, policy, column=name)
        if value is None:
            return None
        labels.append(value)
    return tuple(labels)


class _RowProblem(Exception):
    """A CSV row that cannot become a record (the message says why)."""


def _row_record(table, row, labels, seen, data_root):
    """One CSV row (its labels already collapsed) -> ``(ImageRecord, split or None)``; raises ``_RowProblem``."""
    written = row["path"]
    if not written:
        raise _RowProblem("blank path")
    if written in seen:
        raise _RowProblem(f"path {written!r} repeats line {seen[written]}")
    image = table.parent / written
    problem = data_root.problem(image) or file_problem(image)
    if problem is not None:
        raise _RowProblem(f"{image}: {problem}")
    view = " ".join(row.get("view", "").upper().split())
    if view and view not in KNOWN_VIEWS:
        raise _RowProblem(f"unknown view {row['view']!r} (known: {', '.join(KNOWN_VIEWS)} or blank)")
    study = _id_cell(row, "study", default=written)
    subject = _id_cell(row, "subject", default=study)
    sex = row.get("sex", "").upper()
    if sex not in SEXES:
        raise _RowProblem(f"sex {row['sex']!r} is not F, M, female, male or blank")
    record = ImageRecord(image_id=written, subject_id=subject, study_id=study, view=view,
                         modality=modality_code(row.get("modality", "")),
                         anatomy=row.get("anatomy", "").lower(), labels=labels, sex=SEXES[sex],
                         age=_age(row.get("age", "")), path=str(image))
    return record, _split(row)


def _id_cell(row, column, default):
    if column not in row:
        return default
    if not row[column]:
        raise _RowProblem(f"blank {column} (the column is present, so every row needs one)")
    return row[column]


def _age(text):
    if not text:
        return math.nan
    try:
        age = float(text)
    except ValueError:
        age = math.nan
    if not math.isfinite(age) or age < 0:
        raise _RowProblem(f"age {text!r} is not a non-negative number or blank")
    return age


def _split(row):
    if "split" not in row:
        return None
    name = row["split"].lower()
    if name not in SPLIT_NAMES:
        raise _RowProblem(f"split {row['split']!r} is not one of {', '.join(SPLIT_NAMES)}")
    return SPLIT_NAMES[name]


# === Plain folder layout ===


def _read_tree(root, policy):
    found = list(walk_images(root, policy))
    depths = sorted({len(parts) for parts, _ in found})
    if not found:
        raise DataError(f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) and no labels.csv/index.csv")
    if depths not in ([1], [2]):
        raise DataError(f"{root}: images at depths {depths} below the folder; the folder format reads "
                        f"DIR/*.png (no labels) or DIR/CLASS/*.png (one class per sub-folder). Write a "
                        f"labels.csv with a path column for any other layout")
    classes = tuple(sorted({parts[0] for parts, _ in found})) if depths == [2] else ()
    one_hot = {name: tuple(float(name == other) for other in classes) for name in classes}
    records = []
    for parts, path in found:
        problem = file_problem(path)
        if problem is not None:
            policy.problem(path, problem)
            continue
        image_id = "/".join(parts)
        records.append(ImageRecord(image_id=image_id, subject_id=image_id, study_id=image_id, view="",
                                   modality="", anatomy="", labels=one_hot.get(parts[0], ()), path=path))
    return Dataset(format=FORMAT, root=root, records=records, label_names=classes, skipped=policy.skipped)
