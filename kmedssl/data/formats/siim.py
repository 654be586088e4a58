"""SIIM-ACR Pneumothorax Segmentation (2019): DICOM radiographs with pneumothorax masks as RLE in a CSV.

Layout (the challenge's training download)::

    root/train-rle.csv                 columns ``ImageId``, `` EncodedPixels`` (names compared stripped)
    root/dicom-images-train/**.dcm     DICOM files, any depth (read as ``formats.dicom`` lists them);
                                       without that folder, the DICOM files anywhere under ``root``

``ImageId`` is the image's SOPInstanceUID. ``EncodedPixels`` is ``-1`` (no pneumothorax) or the
challenge's relative, column-major RLE (``formats.rle``), decoded over the DICOM's Rows x Columns. An
image may have several rows (one per pneumothorax region): their masks are OR-ed.

``read_siim(root)`` returns a ``dense.DenseDataset`` with one structure, ``pneumothorax``, and one label,
``pneumothorax`` (1.0 when the mask is not empty). ``image_id`` is ``dicom.pseudonym(SOPInstanceUID)``;
images are decoded by ``dicom.read_dicom_pixels``. ``subject_id`` and ``study_id`` are pseudonyms of the
header's PatientID and StudyInstanceUID (the image's own id when blank); every image is frontal ("PA").
``read(root)`` (format "siim" of ``kmedssl.data.formats.read_dataset``) gives the same images as a
classification ``Dataset`` with the label ``pneumothorax``.

Problems (``ErrorPolicy``: ``DataError`` "FILE: problem" on one line, or a counted skip): a CSV without
the two columns; a row with bad RLE (a value that is not a non-negative integer, an odd number of values,
a zero-length run, a run past the last pixel: the message names the CSV, its row number and the value or
run, never the ImageId); a row whose ImageId has no DICOM file; a DICOM file with no row, an unreadable
header, no Rows/Columns or a SOPInstanceUID already seen. A skipped row leaves its image out.
"""

import csv
import pathlib

import pydicom

from kmedssl.data.errors import DataError
from kmedssl.data.formats import dicom
from kmedssl.data.formats.common import ErrorPolicy
from kmedssl.data.formats.dense import DenseDataset, DenseRecord, classification
from kmedssl.data.formats.rle import decode_rle

FORMAT = "siim"
CSV_NAME = "train-rle.csv"
IMAGE_FOLDER = "dicom-images-train"
COLUMNS = ("ImageId", "EncodedPixels")
STRUCTURES = ("pneumothorax",)
LABEL_NAMES = ("pneumothorax",)


def looks_like(path):
    """True for a folder holding ``train-rle.csv``."""
    return (pathlib.Path(path) / CSV_NAME).is_file()


def read(root, on_error="raise"):
    """``read_siim`` as a classification ``Dataset`` (``dense.classification``; loads the DICOM image only)."""
    return classification(read_siim(root, on_error=on_error), dicom.read_dicom_pixels)


def read_siim(root, on_error="raise"):
    """Read a SIIM-ACR training folder into a ``DenseDataset`` (format "siim").

    Raises:
        DataError: no ``train-rle.csv`` or no DICOM file, a CSV without its columns, or (with
            ``on_error="raise"``) the first bad row or file, naming it.
    """
    root = pathlib.Path(root)
    policy = ErrorPolicy(on_error)
    table = root / CSV_NAME
    if not table.is_file():
        raise DataError(f"{root}: no {CSV_NAME} (the SIIM-ACR layout)")
    images = root / IMAGE_FOLDER if (root / IMAGE_FOLDER).is_dir() else root
    headers = _headers(dicom._dicom_files(images, policy), policy)
    if not headers:
        raise DataError(f"{images}: no DICOM files")
    rows, bad = _rows(table, headers, policy)
    records = []
    for uid, (path, height, width, patient, study) in headers.items():
        if uid in bad:
            continue
        if uid not in rows:
            policy.problem(path, f"no row in {table.name} for this image")
            continue
        encoded = tuple(text for _, text in rows[uid])
        positive = any(text.strip() != "-1" for text in encoded)
        image_id = dicom.pseudonym(uid)
        records.append(DenseRecord(image_id=image_id, path=str(path), size=(height, width),
                                   labels=(float(positive),), annotation=encoded,
                                   study_id=dicom.pseudonym(study) if study else image_id,
                                   subject_id=dicom.pseudonym(patient) if patient else ""))
    return DenseDataset(format=FORMAT, root=root, records=records, structures=STRUCTURES,
                        label_names=LABEL_NAMES, skipped=policy.skipped, loader=load_siim)


def load_siim(record):
    """``(image, {"pneumothorax": mask})`` of a ``read_siim`` record: the DICOM pixels and the OR of its rows."""
    image = dicom.read_dicom_pixels(record.path)
    height, width = record.size
    if image.shape != (height, width):
        raise DataError(f"{record.path}: decoded {image.shape[0]}x{image.shape[1]} pixels, the header says "
                        f"{height}x{width}")
    mask = decode_rle("-1", height, width)
    for text in record.annotation:
        mask |= decode_rle(text, height, width)  # checked by read_siim
    return image, {"pneumothorax": mask}


def _headers(files, policy):
    """``{SOPInstanceUID: (path, Rows, Columns, PatientID, StudyInstanceUID)}`` of the DICOM files (headers
    only; the last two "" when blank)."""
    found = {}
    for path in files:
        with dicom._quiet():
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True,
                                         specific_tags=["SOPInstanceUID", "Rows", "Columns", "PatientID",
                                                        "StudyInstanceUID"])
                uid = str(header.get("SOPInstanceUID", "") or "").strip()
                rows, columns = header.get("Rows"), header.get("Columns")
                patient = str(header.get("PatientID", "") or "").strip()
                study = str(header.get("StudyInstanceUID", "") or "").strip()
            except Exception as error:  # any pydicom failure: its message may quote element values
                policy.problem(path, f"unreadable or corrupt DICOM header ({type(error).__name__})")
                continue
        if not uid or not isinstance(rows, int) or not isinstance(columns, int):
            policy.problem(path, "blank SOPInstanceUID, Rows or Columns")
        elif uid in found:
            policy.problem(path, f"same SOPInstanceUID as {found[uid][0]} (duplicate image)")
        else:
            found[uid] = (path, rows, columns, patient, study)
    return found


def _rows(table, headers, policy):
    """``({uid: [(row number, EncodedPixels)]}, {uids with a bad row})``; every RLE checked against its
    image's size."""
    rows, bad = {}, set()
    with open(table, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        if any(name not in header for name in COLUMNS):
            raise DataError(f"{table}: expected the columns {list(COLUMNS)} (names stripped). "
                            f"Received: {header}")
        uid_at, rle_at = header.index("ImageId"), header.index("EncodedPixels")
        for number, row in enumerate(reader, start=2):  # line numbers: the header is line 1
            if not row:
                continue
            if len(row) <= max(uid_at, rle_at):
                policy.problem(table, f"row {number}: {len(row)} cells, expected {len(header)}")
                continue
            uid, text = row[uid_at].strip(), row[rle_at]
            if uid not in headers:
                policy.problem(table, f"row {number}: its ImageId has no DICOM file")
                continue
            _, height, width, _, _ = headers[uid]
            try:
                decode_rle(text, height, width)
            except ValueError as error:
                bad.add(uid)
                policy.problem(table, f"row {number}: bad EncodedPixels: {error}")
                continue
            rows.setdefault(uid, []).append((number, text))
    return rows, bad
