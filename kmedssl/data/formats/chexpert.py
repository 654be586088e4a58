"""CheXpert (Irvin et al. 2019): chest radiographs listed in ``train.csv`` / ``valid.csv``.

Layout (the Stanford release, full or "-small"; the CSVs may sit in ``root`` or in one sub-folder)::

    root/train.csv, root/valid.csv      Path, Sex, Age, Frontal/Lateral, AP/PA + the 14 observations
    root/train/patient00001/study1/view1_frontal.jpg, ...

``Path`` (e.g. ``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``) is resolved against,
in this order, the CSV's folder, its parent, and the CSV's folder without the path's first component (a
renamed release folder); the first existing file wins. subject = the ``patientNNNNN`` component, study =
the ``studyN`` component, image_id = ``Path`` as written. Views: a frontal image takes its AP/PA value
("AP" or "PA"); a lateral image is "LL" when AP/PA says "LL", otherwise "LATERAL". When both CSVs are
present, ``train.csv`` subjects are split "train" and ``valid.csv`` subjects "val". Sex
(Male/Female/Unknown -> "M"/"F"/"") and Age go into the records when the columns exist.

Problems (``ErrorPolicy``): a missing image file; an absolute or ``..`` path, an image reached through a
symbolic link out of ``root`` (``common.DataRoot``), or a path without ``patientN``/``studyN`` components;
a repeated Path; a Frontal/Lateral value other than Frontal/Lateral; a frontal image whose AP/PA is blank
or not AP/PA (the projection is not guessed); a lateral image whose AP/PA is AP or PA; an unknown Sex; an
Age that is not a non-negative number; a label value other than 1.0/0.0/-1.0/blank; a subject in both CSVs.
"""

import os
import pathlib
import re

from kmedssl.data.errors import DataError
from kmedssl.data.formats.chexpert_labels import (CHEXPERT_LABELS, collapse_row, csv_header, find_table,
                                                  official_splits, parse_age, read_csv)
from kmedssl.data.formats.common import DataRoot, Dataset, ErrorPolicy
from kmedssl.data.records import ImageRecord

FORMAT = "chexpert"
TABLES = {"train.csv": "train", "valid.csv": "val"}
COLUMNS = ("Path", "Frontal/Lateral", "AP/PA") + CHEXPERT_LABELS
SEX = {"male": "M", "female": "F", "unknown": "", "": ""}
LATERAL_CODES = ("", "LATERAL", "LL", "RL")
_PATIENT = re.compile(r"patient\d+")
_STUDY = re.compile(r"study\d+")


def looks_like(path):
    """True when ``path`` is a folder with a ``train.csv`` or ``valid.csv`` having CheXpert's columns."""
    try:
        return bool(_tables(pathlib.Path(path)))
    except (DataError, OSError):
        return False


def read(root, on_error="raise"):
    """Read a CheXpert folder into a ``Dataset`` (format "chexpert", labels ``CHEXPERT_LABELS``).

    Raises:
        DataError: neither CSV is found or one is unreadable, or (with ``on_error="raise"``) the first bad
            row, naming the file and line.
    """
    root = pathlib.Path(root)
    policy = ErrorPolicy(on_error)
    tables = _tables(root)
    if not tables:
        raise DataError(f"{root}: no train.csv or valid.csv with CheXpert columns here or in a sub-folder")
    records, assignments, seen = [], {}, {}
    data_root = DataRoot(root)
    for table, split in tables.items():
        for line, row in read_csv(table, COLUMNS, policy, optional=("Sex", "Age")):
            if row["Path"] in seen:
                policy.problem(table, f"line {line}: Path {row['Path']} repeats {seen[row['Path']]}")
                continue
            record = _record(table, line, row, policy, data_root)
            if record is None:
                continue
            seen[row["Path"]] = f"{table.name} line {line}"
            records.append(record)
            assignments.setdefault(record.subject_id, {}).setdefault(split, f"{table.name} line {line}")
    splits = None
    if len(tables) == 2:
        records, splits = official_splits(records, assignments, " and ".join(str(t) for t in tables), policy)
    return Dataset(format=FORMAT, root=root, records=records, label_names=CHEXPERT_LABELS, splits=splits,
                   skipped=policy.skipped)


# === Locating the tables ===


def _tables(root):
    """``{csv path: split}`` of the CheXpert tables under ``root`` (those with Path and Frontal/Lateral)."""
    found = {}
    for name, split in TABLES.items():
        table = find_table(root, (name,))
        header = csv_header(table) if table is not None else None
        if header is not None and "Path" in header and "Frontal/Lateral" in header:
            found[table] = split
    return found


# === Rows ===


def _record(table, line, row, policy, data_root):
    """The ``ImageRecord`` of one row, or None after reporting its problem."""
    relative = pathlib.PurePosixPath(row["Path"].replace("\\", "/"))
    if not row["Path"] or relative.is_absolute() or ".." in relative.parts:
        policy.problem(table, f"line {line}: Path {row['Path']!r} must be a relative path inside the data set")
        return None
    subject = next((part for part in relative.parts if _PATIENT.fullmatch(part)), None)
    study = next((part for part in relative.parts if _STUDY.fullmatch(part)), None)
    if subject is None or study is None:
        policy.problem(table, f"line {line}: Path {row['Path']!r} has no patientN/studyN components")
        return None
    view = _view(table, line, row, policy)
    sex = None if view is None else _sex(table, line, row, policy)
    age = None if sex is None else parse_age(table, line, "Age", row.get("Age", ""), policy)
    if age is None:
        return None
    labels = collapse_row(row, table, line, policy)
    if labels is None:
        return None
    image = _resolve(table.parent, relative)
    if image is None:
        policy.problem(table, f"line {line}: image file not found: {row['Path']} (looked in {table.parent} and "
                              f"{table.parent.parent})")
        return None
    problem = data_root.problem(image)
    if problem is not None:
        policy.problem(table, f"line {line}: {image}: {problem}")
        return None
    return ImageRecord(image_id=row["Path"], subject_id=subject, study_id=study, view=view, modality="XR",
                       anatomy="chest", labels=labels, sex=sex, age=age, path=image)


def _resolve(folder, relative):
    candidates = [folder / relative, folder.parent / relative]
    if len(relative.parts) > 1:
        candidates.append(folder.joinpath(*relative.parts[1:]))
    return next((str(c) for c in candidates if os.path.isfile(c)), None)


def _view(table, line, row, policy):
    kind, code = row["Frontal/Lateral"].lower(), row["AP/PA"].upper()
    if kind == "frontal" and code in ("AP", "PA"):
        return code
    if kind == "lateral" and code in LATERAL_CODES:
        return "LL" if code == "LL" else "LATERAL"
    if kind not in ("frontal", "lateral"):
        policy.problem(table, f"line {line}: Frontal/Lateral {row['Frontal/Lateral']!r} is not Frontal or Lateral")
    else:
        policy.problem(table, f"line {line}: AP/PA {row['AP/PA']!r} does not fit a {kind} image "
                              f"(frontal: AP or PA; lateral: blank, LATERAL, LL or RL)")
    return None


def _sex(table, line, row, policy):
    sex = SEX.get(row.get("Sex", "").lower())
    if sex is None:
        policy.problem(table, f"line {line}: Sex {row['Sex']!r} is not Male, Female or Unknown")
    return sex
