"""ChestX-ray14 (NIH, Wang et al. 2017): frontal chest radiographs listed in ``Data_Entry_2017.csv``.

Layout (the NIH release; the CSV may sit in ``root`` or in one sub-folder, the images next to it)::

    root/Data_Entry_2017.csv            Image Index, Finding Labels, Follow-up #, Patient ID, Patient Age,
                                        Patient Gender, View Position, ...
    root/images/00000001_000.png        or root/images_001/images/00000001_000.png, images_002/..., ...
    root/train_val_list.txt             official split (optional; both lists or neither)
    root/test_list.txt

Each row is one image (``ImageRecord``: image_id = Image Index, subject = Patient ID without leading
zeros, study = ``{subject}_{Follow-up #}``, view = View Position (PA/AP), modality "XR", anatomy
"chest"). ``Finding Labels`` is split on "|" into the 14 labels of the data set (``CXR14_LABELS``); "No
Finding" alone means all zero. ``Data_Entry_2017_v2020.csv`` (with "Patient Sex") is read the same way.
With the two official lists, subjects of ``train_val_list.txt`` are split "train" (the release does not
separate a validation set) and those of ``test_list.txt`` "test".

Problems (``ErrorPolicy``): an image file that is not found, found in two image folders, or a symbolic link
out of its image folder (``common.DataRoot``; the folders themselves may be links); a repeated
Image Index; malformed Patient ID or Follow-up #; an unknown finding name, "No Finding" with a finding, or
an empty Finding Labels; a View Position other than PA/AP; a gender other than M/F; an Age that is not a
non-negative number; a subject in both lists (leakage) or with images in neither.
"""

import os
import pathlib

from kmedssl.data.errors import DataError
from kmedssl.data.formats.chexpert_labels import find_table, official_splits, parse_age, read_csv
from kmedssl.data.formats.common import DataRoot, Dataset, ErrorPolicy
from kmedssl.data.records import ImageRecord

FORMAT = "chestxray14"
ENTRY_TABLES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
CXR14_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
NO_FINDING = "No Finding"
COLUMNS = ("Image Index", "Finding Labels", "Follow-up #", "Patient ID", "View Position")
SEX_COLUMNS = ("Patient Gender", "Patient Sex")
SPLIT_LISTS = {"train_val_list.txt": "train", "test_list.txt": "test"}


def looks_like(path):
    """True when ``path`` is a folder holding ``Data_Entry_2017.csv`` (in it or a sub-folder)."""
    try:
        return find_table(pathlib.Path(path), ENTRY_TABLES) is not None
    except (DataError, OSError):
        return False


def read(root, on_error="raise"):
    """Read a ChestX-ray14 folder into a ``Dataset`` (format "chestxray14", labels ``CXR14_LABELS``).

    Raises:
        DataError: the CSV is missing or unreadable, only one of the two split lists is present, or (with
            ``on_error="raise"``) the first bad row, naming the file and line.
    """
    root = pathlib.Path(root)
    policy = ErrorPolicy(on_error)
    table = find_table(root, ENTRY_TABLES)
    if table is None:
        raise DataError(f"{root}: no {ENTRY_TABLES[0]} here or in a sub-folder (ChestX-ray14 layout)")
    images = _index_images(dict.fromkeys((root, table.parent)), policy)
    records, seen = [], {}
    for line, row in read_csv(table, COLUMNS, policy, optional=("Patient Age",) + SEX_COLUMNS):
        name = row["Image Index"]
        if name in seen:
            policy.problem(table, f"line {line}: Image Index {name} repeats line {seen[name]}")
            continue
        seen[name] = line
        record = _record(table, line, row, images, policy)
        if record is not None:
            records.append(record)
    splits = None
    lists = {name: find_table(table.parent, (name,)) for name in SPLIT_LISTS}
    present = [path for path in lists.values() if path is not None]
    if len(present) == 1:
        raise DataError(f"{present[0]}: found only one of the official split lists {list(SPLIT_LISTS)}; "
                        f"provide both or neither")
    if present:
        assignments = _read_lists(lists, {r.image_id: r.subject_id for r in records})
        records, splits = official_splits(records, assignments, " and ".join(map(str, present)), policy)
    return Dataset(format=FORMAT, root=root, records=records, label_names=CXR14_LABELS, splits=splits,
                   skipped=policy.skipped)


# === Images ===


def _index_images(bases, policy):
    """``{file name: path}`` of the files in ``images/`` and ``images_*/images/`` under each base folder."""
    index = {}
    for base in bases:
        folders = [base / "images"] + sorted(base.glob("images_*/images"))
        for folder in folders:
            if not folder.is_dir():
                continue
            data_root = DataRoot(folder)
            for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                problem = data_root.problem(entry.path) if entry.is_symlink() else None
                if problem is not None:
                    policy.problem(entry.path, problem)
                    continue
                if not entry.is_file():
                    continue
                if entry.name in index and index[entry.name] != entry.path:
                    policy.problem(entry.path, f"image file name also found at {index[entry.name]}; "
                                               f"this copy is ignored")
                    continue
                index[entry.name] = entry.path
    return index


# === Rows ===


def _record(table, line, row, images, policy):
    """The ``ImageRecord`` of one row, or None after reporting its problem."""
    subject, follow_up = row["Patient ID"], row["Follow-up #"]
    if not (subject.isascii() and subject.isdigit() and follow_up.isascii() and follow_up.isdigit()):
        policy.problem(table, f"line {line}: malformed Patient ID {subject!r} or Follow-up # {follow_up!r} "
                              f"(expected digits)")
        return None
    labels = _labels(table, line, row["Finding Labels"], policy)
    view = None if labels is None else _view(table, line, row["View Position"], policy)
    sex = None if view is None else _sex(table, line, row, policy)
    age = None if sex is None else parse_age(table, line, "Patient Age", row.get("Patient Age", ""), policy)
    if age is None:
        return None
    path = images.get(row["Image Index"])
    if path is None:
        policy.problem(table, f"line {line}: image file not found: {row['Image Index']} (looked in images/ and "
                              f"images_*/images/ next to the table)")
        return None
    subject = str(int(subject))
    return ImageRecord(image_id=row["Image Index"], subject_id=subject, study_id=f"{subject}_{int(follow_up)}",
                       view=view, modality="XR", anatomy="chest", labels=labels, sex=sex, age=age, path=path)


def _labels(table, line, text, policy):
    names = [name.strip() for name in text.split("|")]
    if names == [NO_FINDING]:
        return (0.0,) * len(CXR14_LABELS)
    unknown = [name for name in names if name not in CXR14_LABELS]
    if unknown:
        policy.problem(table, f"line {line}: Finding Labels {text!r}: {unknown} not among {NO_FINDING!r} (alone) "
                              f"and {list(CXR14_LABELS)}")
        return None
    return tuple(float(name in names) for name in CXR14_LABELS)


def _view(table, line, text, policy):
    view = text.upper()
    if view not in ("PA", "AP"):
        policy.problem(table, f"line {line}: View Position {text!r} is not PA or AP")
        return None
    return view


def _sex(table, line, row, policy):
    text = next((row[name] for name in SEX_COLUMNS if name in row), "")
    sex = {"M": "M", "F": "F", "": ""}.get(text.upper())
    if sex is None:
        policy.problem(table, f"line {line}: patient gender {text!r} is not M or F")
    return sex


def _read_lists(lists, subjects):
    """``{subject_id: {split: "LIST line N"}}`` from the official image lists (an image in both lists puts
    its subject in both splits, which ``official_splits`` reports as leakage)."""
    assignments = {}
    for name, split in SPLIT_LISTS.items():
        path = lists[name]
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"{path}: unreadable split list ({error})") from None
        for number, image in enumerate(lines, start=1):
            image = image.strip()
            if image in subjects:
                assignments.setdefault(subjects[image], {}).setdefault(split, f"{name} line {number}")
    return assignments
