"""Writing the chest phantom to disk in the MIMIC-CXR-JPG layout, so the real reader is exercised by it.

``write_mimic_cxr(out_dir)`` renders a ``ChestCohort`` and writes::

    out_dir/files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg     8-bit grey JPEG, quality 95
    out_dir/mimic-cxr-2.0.0-metadata.csv.gz            the release's 12 columns (ViewPosition = record view)
    out_dir/mimic-cxr-2.0.0-chexpert.csv.gz            subject_id, study_id + 14 CheXpert columns
    out_dir/mimic-cxr-2.0.0-split.csv.gz               dicom_id, study_id, subject_id, split

The phantom's six findings go to their CheXpert columns (``CHEXPERT_COLUMNS``); "No Finding" is 1.0 when
a study has none; every other cell is blank, 0.0 or -1.0 (uncertain), chosen deterministically, so that
after collapsing (1.0 -> 1, else 0) the labels equal the cohort's. Splits are the seeded 80/10/10
subject split of ``kmedssl.data.splits.subject_split``. The output is a function of the arguments alone
(gzip headers carry no time stamp).
"""

import csv
import gzip
import hashlib
import io
import pathlib

import numpy as np
from PIL import Image

from kmedssl.data.formats.chexpert_labels import CHEXPERT_LABELS
from kmedssl.data.formats.mimic_cxr import CHEXPERT, METADATA, SPLIT, image_path
from kmedssl.data.phantom import CHEST_LABELS, ChestCohort
from kmedssl.data.splits import subject_split

CHEXPERT_COLUMNS = {"cardiomegaly": "Cardiomegaly", "effusion": "Pleural Effusion", "nodule": "Lung Lesion",
                    "pneumothorax": "Pneumothorax", "consolidation": "Consolidation", "atelectasis": "Atelectasis"}
METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
                    "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning")
_VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral"}
_SPLIT_NAMES = {"train": "train", "val": "validate", "test": "test"}
_JPEG_QUALITY = 95


def write_mimic_cxr(out_dir, num_subjects=50, image_size=256, seed=0, progress=None):
    """Write the phantom ``ChestCohort(num_subjects, seed)`` as MIMIC-CXR-JPG under ``out_dir``.

    Args:
        out_dir: folder to write; created if needed, and it must be empty (``refuse_non_empty``).
        num_subjects: number of simulated patients (positive integer).
        image_size: side of the square JPEG images in pixels (integer >= 8).
        seed: non-negative integer seed of the cohort, the uncertain/blank label cells and the split.
        progress: optional ``progress(total)`` called once with the number of images, then ``progress(1)``
            after each image is written.

    Returns:
        ``pathlib.Path`` of ``out_dir``, readable with ``kmedssl.data.formats.mimic_cxr.read``.

    Raises:
        FileExistsError: ``out_dir`` is a file or a folder that is not empty.
    """
    out, size = prepare_layout(out_dir, image_size)
    cohort = ChestCohort(num_subjects=num_subjects, seed=seed)
    files = out / "files"
    dicom_ids = {r.image_id: _dicom_id(cohort.seed, r.image_id) for r in cohort.records}
    for record in counted(cohort.records, progress):
        path = pathlib.Path(image_path(str(files), record.subject_id, record.study_id, dicom_ids[record.image_id]))
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.round(cohort.render(record, image_size=size) * 255.0).astype(np.uint8)
        Image.fromarray(pixels).save(path, format="JPEG", quality=_JPEG_QUALITY)
    _write_csv_gz(out / METADATA[0], METADATA_COLUMNS,
                  [_metadata_row(r, dicom_ids[r.image_id], size) for r in cohort.records])
    _write_csv_gz(out / CHEXPERT[0], ("subject_id", "study_id") + tuple(sorted(CHEXPERT_LABELS)),
                  _chexpert_rows(cohort))
    splits = subject_split(cohort.records, seed=cohort.seed)
    split_rows = [(dicom_ids[r.image_id], r.study_id, r.subject_id, _SPLIT_NAMES[name])
                  for name, records in splits.items() for r in records]
    _write_csv_gz(out / SPLIT[0], ("dicom_id", "study_id", "subject_id", "split"), sorted(split_rows))
    return out


def counted(records, progress=None):
    """Iterate over ``records``, telling ``progress`` their number first and then each one done."""
    records = list(records)
    if progress is not None:
        progress(len(records))
    for record in records:
        yield record
        if progress is not None:
            progress(1)


def prepare_layout(out_dir, image_size, minimum=8):
    """``(out, size)`` of a phantom layout about to be written: ``image_size`` checked (an integer >=
    ``minimum``) and ``out`` new or an empty folder (``refuse_non_empty``).

    Raises:
        ValueError: ``image_size`` is not an integer >= ``minimum``.
        FileExistsError: as ``refuse_non_empty``.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < minimum:
        raise ValueError(f"Expected image_size to be an integer >= {minimum}. Received: image_size={image_size!r}")
    out = pathlib.Path(out_dir)
    refuse_non_empty(out)
    return out, int(image_size)


def refuse_non_empty(out):
    """The rule of every phantom layout: ``out`` is new or an empty folder. A layout's files *are* the data
    set, so nothing there may be replaced, and nothing left from another write may be read as part of it.

    Raises:
        FileExistsError: ``out`` is a file or a folder that is not empty (the message names it).
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and is not an empty folder; choose a new --out folder")


def chexpert_labels(cohort_labels):
    """The cohort's multi-hot over ``CHEST_LABELS`` -> the collapsed 14 CheXpert labels the files encode."""
    present = {CHEXPERT_COLUMNS[name] for name, value in zip(CHEST_LABELS, cohort_labels) if value == 1.0}
    if not present:
        present = {"No Finding"}
    return tuple(float(name in present) for name in CHEXPERT_LABELS)


# === Rows ===


def _dicom_id(seed, image_id):
    """A MIMIC-style dicom_id (five dash-separated groups of 8 hex digits), deterministic per image."""
    digest = hashlib.sha256(f"kmedssl-phantom-{seed}-{image_id}".encode()).hexdigest()
    return "-".join(digest[8 * i:8 * (i + 1)] for i in range(5))


def _metadata_row(record, dicom_id, image_size):
    procedure = "CHEST (PA AND LAT)" if record.view != "AP" else "CHEST (PORTABLE AP)"
    number = int(record.study_id)
    date = f"21{number % 90 + 10:02d}{number % 12 + 1:02d}{number % 28 + 1:02d}"
    time = f"{number % 24:02d}{number % 60:02d}{number % 59:02d}.000"
    orientation = "Recumbent" if record.view == "AP" else "Erect"
    return (dicom_id, record.subject_id, record.study_id, procedure, record.view, image_size, image_size, date,
            time, procedure, _VIEW_MEANING[record.view], orientation)


def _chexpert_rows(cohort):
    """One row per study: 1.0 for present findings; blank, 0.0 or -1.0 (deterministic) for the others."""
    columns = tuple(sorted(CHEXPERT_LABELS))
    rows, done = [], set()
    for record in cohort.records:
        key = (record.subject_id, record.study_id)
        if key in done:
            continue
        done.add(key)
        positive = chexpert_labels(record.labels)
        rng = np.random.default_rng(np.random.SeedSequence([cohort.seed, int(record.study_id)]))
        cells = []
        for name in columns:
            if positive[CHEXPERT_LABELS.index(name)] == 1.0:
                cells.append("1.0")
            elif name == "No Finding":
                cells.append("")
            else:
                cells.append(("-1.0", "0.0", "0.0", "", "", "")[int(rng.integers(6))])
        rows.append(key + tuple(cells))
    return rows


def _write_csv_gz(path, header, rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as handle:
        handle.write(buffer.getvalue().encode("utf-8"))
