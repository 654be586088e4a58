"""MIMIC-CXR-JPG (Johnson et al. 2019): chest radiograph studies with CheXpert labels (paper 000 §2).

Layout (the PhysioNet release; the CSVs may sit in ``root`` or in one sub-folder such as ``root/metadata/``,
``.csv`` or ``.csv.gz``)::

    root/files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg      XX = first two digits of SUBJECT
    root/mimic-cxr-2.0.0-metadata.csv.gz             dicom_id, subject_id, study_id, ViewPosition, ...
    root/mimic-cxr-2.0.0-chexpert.csv.gz             subject_id, study_id + the 14 CheXpert labels
    root/mimic-cxr-2.0.0-split.csv.gz                dicom_id, study_id, subject_id, split (optional)

Each metadata row is one image (``ImageRecord``: image_id = dicom_id, modality "XR", anatomy "chest",
``view`` = ViewPosition upper-cased, "" when blank). Labels are per study, collapsed by
``collapse_label`` (1.0 -> 1; 0.0, -1.0, blank -> 0). The split file gives ``Dataset.splits``
(``train``/``validate``/``test`` -> "train"/"val"/"test").

Problems (``ErrorPolicy``: raise ``DataError`` naming file and line, or skip and count): a metadata row
whose image file is missing or reached through a symbolic link out of ``files/`` (the data root,
``common.DataRoot``; ``files`` itself may be a link), whose ids are malformed or repeated, or whose
ViewPosition is not a known MIMIC code (``VIEW_POSITIONS``); a study without a labels row; a repeated
labels row or a label value other than 1.0/0.0/-1.0/blank (one problem; the study's images are left out
with it); a split value other than train/validate/test; a subject in several splits or without a split row.
Images with a known view other than frontal/lateral (e.g. "AP AXIAL", blank) are kept; pairing ignores them.
"""

import os
import pathlib

from kmedssl.data.errors import DataError
from kmedssl.data.formats.chexpert_labels import (CHEXPERT_LABELS, collapse_row, find_table, official_splits,
                                                  read_csv)
from kmedssl.data.formats.common import DataRoot, Dataset, ErrorPolicy
from kmedssl.data.records import ImageRecord

FORMAT = "mimic-cxr"
METADATA = ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-metadata.csv")
CHEXPERT = ("mimic-cxr-2.0.0-chexpert.csv.gz", "mimic-cxr-2.0.0-chexpert.csv")
SPLIT = ("mimic-cxr-2.0.0-split.csv.gz", "mimic-cxr-2.0.0-split.csv")
# Every ViewPosition code of the MIMIC-CXR release ("" = not recorded).
VIEW_POSITIONS = ("PA", "AP", "LATERAL", "LL", "AP AXIAL", "AP LLD", "AP RLD", "PA LLD", "PA RLD", "LAO", "RAO",
                  "LPO", "SWIMMERS", "XTABLE LATERAL", "")
SPLIT_NAMES = {"train": "train", "validate": "val", "test": "test"}


def looks_like(path):
    """True when ``path`` is a folder holding ``mimic-cxr-2.0.0-metadata.csv(.gz)`` (in it or a sub-folder)."""
    path = pathlib.Path(path)
    try:
        return find_table(path, METADATA) is not None
    except (DataError, OSError):
        return False


def read(root, on_error="raise"):
    """Read a MIMIC-CXR-JPG folder into a ``Dataset`` (format "mimic-cxr", labels ``CHEXPERT_LABELS``).

    Raises:
        DataError: a required CSV or the ``files/`` folder is missing or unreadable, or (with
            ``on_error="raise"``) the first bad row, naming the file and line.
    """
    root = pathlib.Path(root)
    policy = ErrorPolicy(on_error)
    metadata = _require(root, METADATA)
    chexpert = _require(root, CHEXPERT)
    split = find_table(root, SPLIT)
    images = _files_folder(root, metadata)
    labels, rejected_studies = _read_labels(chexpert, policy)
    records = _read_metadata(metadata, images, labels, rejected_studies, chexpert, policy)
    splits = None
    if split is not None:
        records, splits = official_splits(records, _read_split(split, policy), split, policy)
    return Dataset(format=FORMAT, root=root, records=records, label_names=CHEXPERT_LABELS, splits=splits,
                   skipped=policy.skipped)


def image_path(files, subject_id, study_id, dicom_id):
    """``files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg`` for string ids (XX = first two digits of the subject)."""
    return os.path.join(files, f"p{subject_id[:2]}", f"p{subject_id}", f"s{study_id}", f"{dicom_id}.jpg")


# === Locating the parts ===


def _require(root, names):
    table = find_table(root, names)
    if table is None:
        raise DataError(f"{root}: no {names[1]} or {names[0]} here or in a sub-folder (MIMIC-CXR-JPG layout)")
    return table


def _files_folder(root, metadata):
    for base in dict.fromkeys((root, metadata.parent)):
        if (base / "files").is_dir():
            return str(base / "files")
    raise DataError(f"{root}: no files/ folder (expected files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg next to "
                    f"{metadata.name})")


# === Tables ===


def _read_labels(path, policy):
    """``{(subject_id, study_id): labels}`` and the set of studies whose labels row was rejected."""
    labels, rejected, seen = {}, set(), {}
    for line, row in read_csv(path, ("subject_id", "study_id") + CHEXPERT_LABELS, policy):
        key = (row["subject_id"], row["study_id"])
        if not _ids_ok(path, line, policy, subject_id=key[0], study_id=key[1]):
            continue
        if key in seen:
            policy.problem(path, f"line {line}: study {key[1]} of subject {key[0]} already has a labels row "
                                 f"(line {seen[key]})")
            rejected.add(key)
            continue
        seen[key] = line
        values = collapse_row(row, path, line, policy)
        if values is None:
            rejected.add(key)
            continue
        labels[key] = values
    for key in rejected:
        labels.pop(key, None)
    return labels, rejected


def _read_metadata(path, files, labels, rejected_studies, chexpert, policy):
    records, seen, data_root = [], {}, DataRoot(files)
    for line, row in read_csv(path, ("dicom_id", "subject_id", "study_id", "ViewPosition"), policy):
        dicom_id, subject_id, study_id = row["dicom_id"], row["subject_id"], row["study_id"]
        if not _ids_ok(path, line, policy, subject_id=subject_id, study_id=study_id):
            continue
        if not dicom_id or any(c in dicom_id for c in "/\\") or dicom_id in (".", ".."):
            policy.problem(path, f"line {line}: malformed dicom_id {dicom_id!r}")
            continue
        if dicom_id in seen:
            policy.problem(path, f"line {line}: dicom_id {dicom_id} repeats line {seen[dicom_id]}")
            continue
        seen[dicom_id] = line
        view = " ".join(row["ViewPosition"].upper().split())
        if view not in VIEW_POSITIONS:
            policy.problem(path, f"line {line}: unknown ViewPosition {row['ViewPosition']!r} (known: "
                                 f"{', '.join(v for v in VIEW_POSITIONS if v)} or blank)")
            continue
        key = (subject_id, study_id)
        if key in rejected_studies:
            continue  # its labels row is the problem already reported (and counted)
        if key not in labels:
            policy.problem(path, f"line {line}: study {study_id} (subject {subject_id}) has no labels row in "
                                 f"{chexpert}")
            continue
        image = image_path(files, subject_id, study_id, dicom_id)
        if not os.path.isfile(image):
            policy.problem(path, f"line {line}: image file not found: {image}")
            continue
        problem = data_root.problem(image)
        if problem is not None:
            policy.problem(path, f"line {line}: {image}: {problem}")
            continue
        records.append(ImageRecord(image_id=dicom_id, subject_id=subject_id, study_id=study_id, view=view,
                                   modality="XR", anatomy="chest", labels=labels[key], path=image))
    return records


def _read_split(path, policy):
    """``{subject_id: {split: "line N"}}`` from the split table."""
    assignments = {}
    for line, row in read_csv(path, ("dicom_id", "study_id", "subject_id", "split"), policy):
        if not _ids_ok(path, line, policy, subject_id=row["subject_id"], study_id=row["study_id"]):
            continue
        split = SPLIT_NAMES.get(row["split"].lower())
        if split is None:
            policy.problem(path, f"line {line}: split {row['split']!r} is not one of {list(SPLIT_NAMES)}")
            continue
        assignments.setdefault(row["subject_id"], {}).setdefault(split, f"line {line}")
    return assignments


def _ids_ok(path, line, policy, **ids):
    """Subject and study ids are digit strings (the subject with at least two, for its pXX folder)."""
    for name, value in ids.items():
        if not (value.isascii() and value.isdigit()) or (name == "subject_id" and len(value) < 2):
            policy.problem(path, f"line {line}: malformed {name} {value!r} (expected digits)")
            return False
    return True
