"""Writing the chest phantom in the SIIM-ACR Pneumothorax layout: DICOM radiographs + ``train-rle.csv``.

``write_siim(out_dir)`` renders the frontal views (PA, AP) of a ``ChestCohort`` and writes::

    out_dir/dicom-images-train/STUDY_UID/SERIES_UID/SOP_UID.dcm    8-bit MONOCHROME2 CR image
    out_dir/train-rle.csv                                           ImageId, EncodedPixels

The mask is the phantom's ``pneumothorax_visible`` (the marking-free rim a reader outlines:
docs/data-phantom-dense.md) of the rendered image. Like the challenge's CSV, an image with pneumothorax
has one row per region — here the part of the mask left of the image's middle column and the part right
of it, each when not empty — and an image without has one row ``-1``. RLE is the challenge's relative,
column-major form (``kmedssl.data.formats.rle.encode_rle``).

DICOM files carry a window (centre 128, width 256) that maps stored value ``v`` to ``v / 255``, so
``dicom.read_dicom_pixels`` returns the 8-bit render. Nothing identifies a patient: the UIDs are derived
from the seed and the image's number (``2.25.`` UUID-derived UIDs), PatientID is a number in order of first
appearance, and there is no name, date, sex or age. The output is a function of the arguments alone.
"""

import csv
import warnings

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from kmedssl.data.formats.rle import encode_rle
from kmedssl.data.formats.siim import CSV_NAME, IMAGE_FOLDER
from kmedssl.data.phantom import ChestCohort
from kmedssl.data.phantom.writer import counted, prepare_layout
from kmedssl.data.records import FRONTAL_VIEWS

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
STRUCTURE = "pneumothorax_visible"


def write_siim(out_dir, num_subjects=50, image_size=256, seed=0, progress=None):
    """Write the frontal views of ``ChestCohort(num_subjects, seed)`` as a SIIM-ACR training folder.

    Args:
        out_dir: folder to write; created if needed, and it must be empty (``writer.refuse_non_empty``).
        num_subjects: number of simulated patients (positive integer).
        image_size: side of the square images in pixels (integer >= 8).
        seed: non-negative integer seed of the cohort and the UIDs.
        progress: as for ``writer.write_mimic_cxr``.

    Returns:
        ``pathlib.Path`` of ``out_dir``, readable with ``kmedssl.data.formats.siim.read_siim``.

    Raises:
        FileExistsError: ``out_dir`` is a file or a folder that is not empty.
    """
    out, size = prepare_layout(out_dir, image_size)
    cohort = ChestCohort(num_subjects=num_subjects, seed=seed)
    subjects, rows = {}, []
    frontal = [record for record in cohort.records if record.view in FRONTAL_VIEWS]
    for n, record in enumerate(counted(frontal, progress)):
        uid = {part: _uid(cohort.seed, n, part) for part in ("study", "series", "image")}
        patient = subjects.setdefault(record.subject_id, f"{len(subjects) + 1:06d}")
        path = out / IMAGE_FOLDER / uid["study"] / uid["series"] / f"{uid['image']}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.round(cohort.render(record, image_size=size) * 255.0).astype(np.uint8)
        _write_dicom(path, pixels, uid, patient, record.view)
        mask = cohort.ground_truth(record, size).masks[STRUCTURE]
        rows += [(uid["image"], text) for text in region_rles(mask)]
    with open(out / CSV_NAME, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("ImageId", " EncodedPixels"))
        writer.writerows(rows)
    return out


def region_rles(mask):
    """The RLE rows of one image: ``["-1"]`` when ``mask`` is empty, else one per non-empty half (the
    columns left of ``width // 2``, then the others), each the full-size mask of that half."""
    middle = mask.shape[1] // 2
    halves = [np.zeros_like(mask) for _ in range(2)]
    halves[0][:, :middle], halves[1][:, middle:] = mask[:, :middle], mask[:, middle:]
    texts = [encode_rle(half) for half in halves if half.any()]
    return texts or ["-1"]


def _uid(seed, number, part):
    """A deterministic ``2.25.`` UID of the ``number``-th image's study, series or image."""
    return generate_uid(prefix=None, entropy_srcs=[f"kmedssl-phantom-siim-{seed}-{number}-{part}"])


def _write_dicom(path, pixels, uid, patient, view):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = uid["image"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CR_IMAGE_STORAGE, uid["image"]
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid["study"], uid["series"]
    ds.PatientID = patient
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", view
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.WindowCenter, ds.WindowWidth = 128, 256  # LINEAR window: v -> v / 255 exactly
    ds.PixelData = pixels.tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path, enforce_file_format=True)
