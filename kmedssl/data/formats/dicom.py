"""DICOM files and folder trees (SPEC §4), read with pydicom; patient identifiers never leave this module.

Layout: ``root`` is one DICOM file, or a folder searched recursively (hidden names skipped, sorted order)
for files named ``*.dcm``/``*.dicom`` or without an extension (also UID-like names such as
``1.2.840.113619.2.55.3``) that carry the Part 10 marker "DICM" at byte 128. Extension-less files
without the marker and ``DICOMDIR`` index files are not images and are passed over.

Listing reads headers only (``read_partial`` stopping before the pixel data, which is never decoded
here). One ``ImageRecord`` per file:

    subject_id  pseudonym(PatientID)          study_id  pseudonym(StudyInstanceUID)
    image_id    pseudonym(SOPInstanceUID)     view      ViewPosition, upper case ("" when blank)
    modality    Modality; CR/DX/DR -> "XR"    anatomy   BodyPartExamined, lower case
    sex         PatientSex F/M, else ""       age       PatientAge in years (``parse_age``)

with no labels. ``pseudonym(v) = sha256("kmedssl" + v)[:16]`` (hex) is one-way and deterministic, so
the same patient gets the same subject in every run. Problems (``ErrorPolicy``: ``DataError`` naming
the file, or a counted skip): a ``.dcm`` file that is not DICOM, an unreadable or corrupt header, no
pixel data, pixel data cut short, a blank PatientID/StudyInstanceUID/SOPInstanceUID, a second file
with the SOPInstanceUID of an earlier one, and a file link out of ``root`` or looping (``common.DataRoot``).

Privacy: only the pseudonyms and the fields above are kept. Messages name the file path and never
quote a DICOM value: while pydicom reads, its value validation (whose messages quote values, as
warnings and to the "pydicom" logger) is off and warnings are silenced, and its exceptions become
``DataError``s without their text or chain. Those switches are process-wide, so DICOM files are read
one thread at a time (a lock); use worker processes to read in parallel.
"""

import contextlib
import hashlib
import os
import pathlib
import re
import threading
import warnings

import numpy as np
import pydicom
from pydicom.config import disable_value_validation
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, get_decoder, pixel_array
from pydicom.uid import DeflatedExplicitVRLittleEndian

from kmedssl.data.errors import DataError
from kmedssl.data.formats.common import DataRoot, Dataset, ErrorPolicy
from kmedssl.data.images import LUMA, check_finite, check_pixel_count
from kmedssl.data.records import ImageRecord

FORMAT = "dicom"
DICOM_SUFFIXES = (".dcm", ".dicom")
MAGIC, MAGIC_OFFSET = b"DICM", 128
NOT_DICOM = "not a DICOM file (no 'DICM' marker at byte 128)"
NO_PIXELS = "no pixel data (not an image, or the file is truncated)"
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel Data, Float Pixel Data, Double Float Pixel Data
UNDEFINED_LENGTH = 0xFFFFFFFF  # encapsulated (compressed) pixel data
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
RADIOGRAPHY = ("CR", "DX", "DR")
SEXES = ("F", "M")
PSEUDONYM_SALT, PSEUDONYM_LENGTH = "kmedssl", 16
AGE_PATTERN = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$")
AGE_YEARS_PER_UNIT = {"D": 1.0 / 365.25, "W": 7.0 / 365.25, "M": 1.0 / 12.0, "Y": 1.0}
AGE_CAP = 90.0  # HIPAA Safe Harbor: ages over 89 are reported as "90 or older"
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
_PYDICOM_LOCK = threading.Lock()


def looks_like(path):
    """True for a ``.dcm``/``.dicom`` file, an extension-less file with the "DICM" marker, or a folder
    holding either anywhere below it."""
    path = pathlib.Path(path)
    if path.is_file():
        return _is_candidate(path)
    if not path.is_dir():
        return False
    for folder, folders, names in os.walk(path):
        folders[:] = [name for name in folders if not name.startswith(".")]
        if any(_is_candidate(pathlib.Path(folder) / name) for name in names):
            return True
    return False


def read(root, on_error="raise"):
    """Read one DICOM file or a folder tree of them into a ``Dataset`` (format "dicom").

    Raises:
        DataError: ``root`` is missing, a folder without DICOM files, or (with ``on_error="raise"``) the
            first bad file, naming it.
    """
    root = pathlib.Path(root)
    policy = ErrorPolicy(on_error)
    if not root.exists():
        raise DataError(f"{root}: no such file or directory")
    single = root.is_file()
    files = [root] if single else _dicom_files(root, policy)
    if not files:
        raise DataError(f"{root}: no DICOM files (*.dcm, *.dicom or extension-less files marked 'DICM')")
    records, seen = [], {}
    for path in files:
        record = _header_record(path, policy, single)
        if record is None:
            continue
        if record.image_id in seen:
            policy.problem(path, f"same SOPInstanceUID as {seen[record.image_id]} (duplicate image)")
            continue
        seen[record.image_id] = path
        records.append(record)
    return Dataset(format=FORMAT, root=root, records=records, label_names=(), skipped=policy.skipped,
                   loader=read_dicom_pixels)


def read_dicom_pixels(record_or_path):
    """Decode a DICOM image (its first frame) to ``(H, W)`` float32 in [0, 1], higher = brighter.

    Grey-scale (PS3.3 C.11): stored values ``x`` -> modality LUT (``x * RescaleSlope + RescaleIntercept``,
    or the Modality LUT Sequence) -> the first VOI window (WindowCenter/WindowWidth, ``voi_window``) when
    present, else min-max over the image -> inverted for MONOCHROME1. Enhanced multi-frame files take
    these attributes from the functional groups of the first frame. Colour (RGB, and YBR converted to RGB
    by pydicom) -> luma (ITU-R BT.601) of the values divided by ``2**BitsStored - 1``. Multi-frame files
    give their first frame only. VOI LUT Sequences and Presentation LUT Shape are not applied.

    The image gate (``kmedssl.data.images``) applies: Rows x Columns at most ``MAX_PIXELS``, checked before
    decoding, and no NaN or Inf modality value (float pixel data, or a non-finite rescale).

    Raises:
        DataError: missing file, not DICOM, corrupt or truncated, no pixel data, a compressed transfer
            syntax whose decoder needs packages that are not installed, an unsupported photometric
            interpretation or VOI function, too many pixels, NaN or Inf values (the message names the file,
            never a DICOM value).
    """
    path = record_or_path.path if isinstance(record_or_path, ImageRecord) else record_or_path
    if path is None:
        raise ValueError(f"Expected a file path or an ImageRecord with a path. Received: {record_or_path!r}")
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with _quiet():
        dataset = _read_full(path)
        frame = _first_frame(dataset, path)
        photometric = str(dataset.get("PhotometricInterpretation", "")).strip().upper()
        if frame.ndim == 3:
            return _luma(frame, dataset)
        if photometric not in MONOCHROME:
            raise DataError(f"{path}: unsupported PhotometricInterpretation {photometric!r} (expected "
                            f"MONOCHROME1, MONOCHROME2, RGB or YBR)")
        try:
            values = _modality(frame, dataset)
            check_finite(values, path)
            image = _voi(values, dataset, path)
        except DataError:
            raise
        except Exception as error:  # a malformed value; pydicom's and float()'s messages may quote it
            raise DataError(f"{path}: unusable Modality LUT, rescale or VOI window attributes "
                            f"({type(error).__name__})") from None
    image = 1.0 - image if photometric == "MONOCHROME1" else image
    return np.ascontiguousarray(image, dtype=np.float32)


# === Identifiers and metadata ===


def pseudonym(value):
    """One-way, deterministic stand-in for an identifier: the first 16 hex digits of sha256("kmedssl" + value)."""
    return hashlib.sha256((PSEUDONYM_SALT + value).encode("utf-8")).hexdigest()[:PSEUDONYM_LENGTH]


def parse_age(text):
    """A DICOM age string (VR AS: "045Y", "006M", "010W", "003D") in years; NaN when blank or malformed.

    Ages of 90 years and over are reported as 90 (HIPAA Safe Harbor).
    """
    match = AGE_PATTERN.match(text or "")
    if match is None:
        return float("nan")
    return min(int(match.group(1)) * AGE_YEARS_PER_UNIT[match.group(2)], AGE_CAP)


def has_dicom_marker(path):
    """True when ``path`` is a file with "DICM" at byte 128 (the DICOM Part 10 preamble)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(MAGIC_OFFSET)
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _modality_code(text):
    code = text.strip().upper()
    return "XR" if code in RADIOGRAPHY else code


def _text(dataset, keyword):
    """An element's value as stripped text; "" when absent or empty."""
    value = dataset.get(keyword)
    return "" if value is None else str(value).strip()


# === Listing ===


def _unsuffixed(name):
    """A name without an extension; a digits-only "extension" (UID-like names such as 1.2.840.10008) counts."""
    suffix = pathlib.PurePath(name).suffix
    return suffix == "" or suffix[1:].isdigit()


def _named_like_dicom(name):
    """A visible ``*.dcm``/``*.dicom`` or extension-less name."""
    return not name.startswith(".") and (pathlib.PurePath(name).suffix.lower() in DICOM_SUFFIXES or _unsuffixed(name))


def _is_candidate(path):
    return _named_like_dicom(path.name) and (path.suffix.lower() in DICOM_SUFFIXES or has_dicom_marker(path))


def _dicom_files(root, policy):
    """Every candidate file below ``root`` (hidden names skipped, folder links not followed), sorted; a
    file link out of ``root`` or looping (``DataRoot``) is reported to ``policy`` and left out.

    Raises:
        DataError: a folder cannot be listed.
    """
    def unlistable(error):
        raise DataError(f"{error.filename}: cannot list the folder ({error.strerror or error})")

    data_root, files = DataRoot(root), []
    for folder, folders, names in os.walk(root, onerror=unlistable):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for path in sorted(pathlib.Path(folder) / name for name in names if _named_like_dicom(name)):
            problem = data_root.problem(path) if path.is_symlink() else None
            if problem is not None:
                policy.problem(path, problem)
            elif _is_candidate(path):
                files.append(path)
    return sorted(files)


def _header_record(path, policy, single):
    """The record of one file from its header, or None after reporting its problem (or for a DICOMDIR
    met in a folder)."""
    if not has_dicom_marker(path):
        policy.problem(path, NOT_DICOM)
        return None
    with _quiet():
        header, problem = _read_header(path)
        if header is not None and not single and _is_dicomdir(header):
            return None
        if problem is not None:
            policy.problem(path, problem)
            return None
        identifiers = {
            "PatientID": _text(header, "PatientID"),
            "StudyInstanceUID": _text(header, "StudyInstanceUID"),
            "SOPInstanceUID": _text(header, "SOPInstanceUID")
            or _text(header.file_meta, "MediaStorageSOPInstanceUID"),
        }
        blank = [keyword for keyword, value in identifiers.items() if not value]
        if blank:
            policy.problem(path, f"blank {', '.join(blank)} (needed to identify the subject, study and image)")
            return None
        sex = _text(header, "PatientSex").upper()
        return ImageRecord(
            image_id=pseudonym(identifiers["SOPInstanceUID"]),
            subject_id=pseudonym(identifiers["PatientID"]),
            study_id=pseudonym(identifiers["StudyInstanceUID"]),
            view=_text(header, "ViewPosition").upper(),
            modality=_modality_code(_text(header, "Modality")),
            anatomy=_text(header, "BodyPartExamined").lower(),
            labels=(),
            sex=sex if sex in SEXES else "",
            age=parse_age(_text(header, "PatientAge")),
            path=str(path),
        )


def _is_dicomdir(header):
    return _text(header.file_meta, "MediaStorageSOPClassUID") == DICOMDIR_SOP_CLASS


def _read_header(path):
    """``(header, problem)``: the elements before the pixel data (None when unparseable), and what makes
    the file unusable (unparseable, no pixel data, pixel data shorter than declared) or None.

    pydicom's exception text is dropped: it may quote element values.
    """
    found = []  # (VR, length) of the pixel data element

    def at_pixels(tag, vr, length):
        if tag in PIXEL_TAGS:
            found.append((vr, length))
            return True
        return False

    try:
        with open(path, "rb") as handle:
            header = read_partial(handle, stop_when=at_pixels)
            # pydicom leaves the file at the start of the pixel data element it stopped before.
            remaining = os.fstat(handle.fileno()).st_size - handle.tell()
    except Exception as error:  # any pydicom failure
        return None, f"unreadable or corrupt DICOM header ({type(error).__name__})"
    if not found:
        return header, NO_PIXELS
    vr, length = found[0]
    element_header = 8 if vr is None else 12  # implicit VR / explicit VR with a 4-byte length
    deflated = header.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian  # read from memory
    if length != UNDEFINED_LENGTH and not deflated and remaining < element_header + length:
        return header, f"truncated pixel data ({max(remaining - element_header, 0)} of {length} bytes)"
    return header, None


# === Pixels ===


def _read_full(path):
    try:
        dataset = pydicom.dcmread(path)
    except InvalidDicomError:
        raise DataError(f"{path}: {NOT_DICOM}") from None
    except Exception as error:  # any pydicom failure: its message may quote element values
        raise DataError(f"{path}: unreadable or corrupt DICOM file ({type(error).__name__})") from None
    if not any(tag in dataset for tag in PIXEL_TAGS):
        raise DataError(f"{path}: {NO_PIXELS}")
    return dataset


def _first_frame(dataset, path):
    """The first frame as pydicom decodes it: (H, W) grey or (H, W, 3) RGB, once the image gate has checked
    its declared Rows x Columns (only this frame is decoded)."""
    rows, columns = dataset.get("Rows"), dataset.get("Columns")
    if isinstance(rows, int) and isinstance(columns, int):
        check_pixel_count(path, columns, rows)
    syntax = dataset.file_meta.get("TransferSyntaxUID")
    try:
        return pixel_array(dataset, index=0)
    except Exception as error:  # any pydicom failure: its message may quote element values
        missing = _missing_decoder(syntax) if syntax is not None and syntax.is_compressed else None
        if missing is not None:
            raise DataError(f"{path}: pixel data compressed as {syntax.name!r} needs a decoder that is not "
                            f"installed; install one of: {missing}") from None
        raise DataError(f"{path}: corrupt or truncated pixel data ({type(error).__name__})") from None


def _missing_decoder(syntax):
    """None when pydicom can decode ``syntax``, else the packages that would let it."""
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return "no pydicom decoder exists for this transfer syntax"
    return None if decoder.is_available else "; ".join(decoder.missing_dependencies)


def _luma(frame, dataset):
    """(H, W, 3) RGB of ``BitsStored`` bits -> (H, W) float32 luma in [0, 1]."""
    scale = float(2 ** int(dataset.get("BitsStored", frame.dtype.itemsize * 8)) - 1)
    grey = frame.astype(np.float64) @ LUMA.astype(np.float64) / scale
    return np.clip(grey, 0.0, 1.0).astype(np.float32)


def _modality(frame, dataset):
    """Stored values -> modality values (PS3.3 C.11.1): the Modality LUT Sequence, else rescale."""
    if dataset.get("ModalityLUTSequence"):
        return apply_modality_lut(frame, dataset).astype(np.float64)
    slope = _frame_attribute(dataset, "RescaleSlope")
    intercept = _frame_attribute(dataset, "RescaleIntercept")
    values = frame.astype(np.float64)
    return values * (1.0 if slope is None else slope) + (0.0 if intercept is None else intercept)


def _voi(values, dataset, path):
    """Modality values -> [0, 1]: the first VOI window when present, else min-max over the image."""
    center = _frame_attribute(dataset, "WindowCenter")
    width = _frame_attribute(dataset, "WindowWidth")
    if center is None or width is None:
        low, high = values.min(), values.max()
        return (values - low) / (high - low) if high > low else np.zeros_like(values)
    function = str(_frame_attribute(dataset, "VOILUTFunction", numeric=False) or "LINEAR").strip().upper()
    if function not in VOI_FUNCTIONS:
        raise DataError(f"{path}: unsupported VOILUTFunction {function!r} (expected one of {VOI_FUNCTIONS})")
    if width <= 0.0 or (function == "LINEAR" and width < 1.0):  # LINEAR needs w >= 1, the others w > 0
        raise DataError(f"{path}: invalid VOI window (WindowWidth {width} for {function})")
    return voi_window(values, center, width, function)


def voi_window(values, center, width, function="LINEAR"):
    """The VOI window of PS3.3 C.11.2.1.2 (LINEAR) and C.11.2.1.3 (LINEAR_EXACT, SIGMOID), output [0, 1].

    LINEAR:       y = clip(((x - (c - 0.5)) / (w - 1) + 0.5), 0, 1)   (w = 1: y = [x > c - 0.5])
    LINEAR_EXACT: y = clip((x - c) / w + 0.5, 0, 1)
    SIGMOID:      y = 1 / (1 + exp(-4 (x - c) / w))
    """
    values = np.asarray(values, dtype=np.float64)
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - center) / width + 0.5, 0.0, 1.0)
    if width == 1.0:
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _frame_attribute(dataset, keyword, numeric=True):
    """``keyword`` at the top level, else in the functional groups of the first frame (enhanced
    multi-frame); the first value of a multi-valued element; None when absent or empty."""
    value = dataset.get(keyword)
    if _is_blank(value):
        value = _functional_group_value(dataset, keyword)
    if isinstance(value, (list, tuple, MultiValue)):
        value = value[0] if len(value) else None
    if _is_blank(value):
        return None
    return float(value) if numeric else str(value)


def _functional_group_value(dataset, keyword):
    """``keyword`` in a macro of the shared functional groups, else of the first frame's; None if absent."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for element in dataset.get(groups)[0] if dataset.get(groups) else ():
            if element.VR == "SQ" and element.value and keyword in element.value[0]:
                return element.value[0].get(keyword)
    return None


def _is_blank(value):
    return value is None or (isinstance(value, str) and not value.strip())


# === Privacy ===


@contextlib.contextmanager
def _quiet():
    """Keep element values (patient identifiers) out of logs while pydicom reads: no value validation
    (its messages quote the value, to the "pydicom" logger and as warnings) and no warnings. Both are
    process-wide switches, so one thread at a time reads DICOM here."""
    with _PYDICOM_LOCK, disable_value_validation(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield

