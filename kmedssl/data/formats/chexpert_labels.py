"""What the three chest X-ray readers share: CheXpert labels, their collapsing, CSV tables, official splits.

Label collapsing (paper 000 §2, following Haque et al. 2023): of the CheXpert labeler's four states only
an explicit positive counts::

    1.0 -> 1        0.0 (negative), -1.0 (uncertain), blank (not mentioned) -> 0

Any other value ("2", "yes", "nan", ...) is a problem reported through the reader's ``ErrorPolicy``.

Tables are read as ``.csv`` or gzip-compressed ``.csv.gz`` files with a header row. A table that cannot
be decoded at all, or lacks a required column, always raises ``DataError`` (skipping it would silently
drop a whole source); a malformed row is a problem of the policy (raise, or skip and count).
"""

import csv
import gzip
import io
import math
import pathlib
import zlib

from kmedssl.data.errors import DataError

# The 14 CheXpert observations in the official order (Irvin et al. 2019).
CHEXPERT_LABELS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
)
_COLLAPSED = {1.0: 1.0, 0.0: 0.0, -1.0: 0.0}
_READ_ERRORS = (OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error)


# === Labels ===


def collapse_label(value, file, row, policy, column=None):
    """One CheXpert label value -> 1.0 (positive) or 0.0 (negative, uncertain, blank); None if it is a problem.

    Args:
        value: the cell as read from the CSV (a string; surrounding spaces are ignored).
        file: the table it comes from (named in the problem).
        row: its line number in that table.
        policy: the reader's ``ErrorPolicy``: raises ``DataError`` or records the skip (then None is returned).
        column: the label's column name, named in the problem when given.
    """
    text = str(value).strip()
    if not text:
        return 0.0
    try:
        number = float(text)
    except ValueError:
        number = None
    if number in _COLLAPSED:
        return _COLLAPSED[number]
    where = f"line {row}" + (f", column {column!r}" if column else "")
    policy.problem(file, f"{where}: label value {text!r} is not one of 1.0, 0.0, -1.0 or blank")
    return None


def collapse_row(row, file, line, policy):
    """The 14 collapsed labels of a row (``{name: value}``) as a tuple, or None at its first bad value."""
    labels = []
    for name in CHEXPERT_LABELS:
        labels.append(collapse_label(row[name], file, line, policy, column=name))
        if labels[-1] is None:
            return None
    return tuple(labels)


# === Tables ===


def find_table(root, names):
    """The one file of ``names`` in ``root``, else in one of its sub-folders; None when there is none.

    Raises:
        DataError: several candidates (e.g. both ``x.csv`` and ``x.csv.gz``, or two sub-folders have one).
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        return None
    found = [root / name for name in names if (root / name).is_file()]
    if not found:
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        found = [folder / name for folder in folders for name in names if (folder / name).is_file()]
    if len(found) > 1:
        listed = ", ".join(str(p) for p in found)
        raise DataError(f"{root}: found several candidates for {names[0]} ({listed}); keep exactly one")
    return found[0] if found else None


def _open_text(path):
    path = pathlib.Path(path)
    if path.name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def csv_header(path):
    """The stripped column names of a CSV(.gz) file, or None when it cannot be read."""
    try:
        with _open_text(path) as handle:
            header = next(csv.reader(handle), None)
    except _READ_ERRORS:
        return None
    return None if header is None else tuple(name.strip() for name in header)


def read_csv(path, columns, policy, optional=()):
    """Iterate the rows of a CSV(.gz) table as ``(line, {column: stripped value})``.

    Args:
        path: the table.
        columns: names that must be in the header; each row's dict holds them.
        policy: the reader's ``ErrorPolicy``; a row with too few fields, or extra non-empty fields, is a
            problem of it (and is not yielded).
        optional: names added to the dict when the header has them.

    Raises:
        DataError: the file cannot be read or decoded, has no header, a duplicate or missing required column.
    """
    path = pathlib.Path(path)
    try:
        with _open_text(path) as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            index = _column_index(path, header, columns, optional)
            for fields in reader:
                if not fields:
                    continue
                if len(fields) < len(header) and len(fields) <= max(index.values()):
                    policy.problem(path, f"line {reader.line_num}: {len(fields)} fields, the header has "
                                         f"{len(header)}")
                    continue
                if any(extra.strip() for extra in fields[len(header):]):
                    policy.problem(path, f"line {reader.line_num}: {len(fields)} fields, the header has "
                                         f"{len(header)} (an unquoted comma?)")
                    continue
                yield reader.line_num, {name: fields[i].strip() for name, i in index.items()}
    except _READ_ERRORS as error:
        raise DataError(f"{path}: unreadable CSV table ({type(error).__name__}: {error})") from None


def _column_index(path, header, columns, optional):
    if not header:
        raise DataError(f"{path}: empty table (no header row)")
    duplicated = sorted({name for name in header if name and header.count(name) > 1})
    if duplicated:
        raise DataError(f"{path}: duplicate columns {duplicated}")
    missing = [name for name in columns if name not in header]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; found {header}")
    wanted = list(columns) + [name for name in optional if name in header and name not in columns]
    return {name: header.index(name) for name in wanted}


# === Official splits ===


def official_splits(records, assignments, file, policy):
    """Check an official split: every subject in exactly one split; returns ``(records, splits)``.

    Args:
        records: the reader's ``ImageRecord`` list.
        assignments: ``{subject_id: {split: where}}`` with split in "train"/"val"/"test" and ``where`` a
            short location (e.g. "line 12") of the subject's first row in that split.
        file: the split file (or files) named in problems.
        policy: the reader's ``ErrorPolicy``.

    A subject in several splits (leakage) and a subject with images but no split row are problems; under
    ``on_error="skip"`` all images of such a subject are left out. ``splits`` is
    ``{subject_id: split}`` over the subjects of the returned records.
    """
    counts = {}
    for record in records:
        counts[record.subject_id] = counts.get(record.subject_id, 0) + 1
    rejected = set()
    for subject in sorted(counts):
        found = assignments.get(subject, {})
        if len(found) > 1:
            places = ", ".join(f"{split} at {where}" for split, where in sorted(found.items()))
            policy.problem(file, f"subject {subject} is in more than one split ({places}): split leakage")
            rejected.add(subject)
        elif not found:
            images = f"{counts[subject]} image" + ("s" if counts[subject] > 1 else "")
            policy.problem(file, f"subject {subject} has {images} but no split row")
            rejected.add(subject)
    kept = [record for record in records if record.subject_id not in rejected]
    splits = {subject: next(iter(assignments[subject])) for subject in counts if subject not in rejected}
    return kept, splits


def parse_age(table, line, column, text, policy):
    """Age in years from a CSV cell: NaN when blank; a problem (None) when not a non-negative number."""
    if not text:
        return math.nan
    try:
        age = float(text)
    except ValueError:
        age = -1.0
    if not 0.0 <= age < math.inf:
        policy.problem(table, f"line {line}: {column} {text!r} is not a non-negative number")
        return None
    return age
