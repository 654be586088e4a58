"""The DICOM reader: header-only listing, pseudonymised records, pixel maths, rejections and privacy.

Every file is written here with pydicom (Explicit VR Little Endian unless stated); pixel expectations are
NumPy computations of the DICOM standard's formulas (PS3.3 C.11), not calls into the code under test.
"""

import hashlib
import logging
import math
import traceback
import warnings

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                         JPEGLSLossless, RLELossless, generate_uid)

from kmedssl.data import DataError, ImageRecord
from kmedssl.data.formats import dicom, infer_format

pytestmark = pytest.mark.backend_free

PHI = {
    "PatientName": "Zyxwv^Quentina",
    "PatientID": "MRN-PHI-48151623",
    "PatientBirthDate": "19230405",
    "AccessionNumber": "ACC-PHI-4242",
}
BAD_UID = "1.2.999.PHI-UID"  # not a valid UID: pydicom's validation message would quote it
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"


# === Writing test files ===


def write_dicom(path, pixels=None, photometric="MONOCHROME2", bits_stored=None, **elements):
    """A DICOM Part 10 file with planted identifiers; ``pixels`` (H, W), (H, W, 3) or (F, H, W) or None."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = elements.pop("sop_class", DX_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = elements.pop("SOPInstanceUID", generate_uid())
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    for key, value in PHI.items():
        setattr(ds, key, value)
    ds.Modality = "DX"
    if pixels is not None:
        pixels = np.asarray(pixels)
        frames = pixels.ndim == 3 and photometric in ("MONOCHROME1", "MONOCHROME2")
        ds.Rows, ds.Columns = pixels.shape[1:3] if frames else pixels.shape[:2]
        if frames:
            ds.NumberOfFrames = pixels.shape[0]
        ds.SamplesPerPixel = 3 if pixels.ndim == 3 and not frames else 1
        if ds.SamplesPerPixel == 3:
            ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = photometric
        ds.BitsAllocated = pixels.dtype.itemsize * 8
        ds.BitsStored = bits_stored or ds.BitsAllocated
        ds.HighBit = ds.BitsStored - 1
        ds.PixelRepresentation = int(np.issubdtype(pixels.dtype, np.signedinteger))
        ds.PixelData = pixels.tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about deliberately non-conformant values
        for key, value in elements.items():
            setattr(ds, key, value)
        ds.save_as(path, enforce_file_format=True)
    return ds


def pseudonym(value):
    return hashlib.sha256(("kmedssl" + value).encode()).hexdigest()[:16]


# === Oracles (PS3.3 C.11) ===


def linear_window(x, center, width):
    """C.11.2.1.2 piecewise, output range [0, 1]."""
    x = np.asarray(x, dtype=np.float64)
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    inside = ((x - (center - 0.5)) / (width - 1) + 0.5) if width > 1 else np.zeros_like(x)
    return np.where(x <= low, 0.0, np.where(x > high, 1.0, inside))


def min_max(x):
    x = np.asarray(x, dtype=np.float64)
    return (x - x.min()) / (x.max() - x.min())


def check(image, expected):
    assert image.dtype == np.float32 and image.shape == np.shape(expected)
    np.testing.assert_allclose(image, expected, rtol=0, atol=2e-6)


@pytest.fixture
def stored(rng):
    """12-bit stored values in 16-bit words, (5, 7)."""
    return rng.integers(0, 4096, size=(5, 7)).astype(np.uint16)


# === Listing ===


def test_records_from_a_folder_tree(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    study = generate_uid()
    first = write_dicom(tmp_path / "a" / "frontal.dcm", np.zeros((4, 4), np.uint16), ViewPosition="PA",
                        Modality="DX", BodyPartExamined="CHEST", PatientSex="F", PatientAge="045Y",
                        StudyInstanceUID=study)
    write_dicom(tmp_path / "a" / "b" / "IM0002", np.zeros((4, 4), np.uint16), ViewPosition="LL", Modality="CR",
                BodyPartExamined="CHEST", PatientSex="F", PatientAge="045Y", StudyInstanceUID=study)
    write_dicom(tmp_path / "a" / "b" / "1.2.840.99.7", np.zeros((4, 4), np.uint16), Modality="CT",
                BodyPartExamined="ABDOMEN", PatientSex="O", PatientAge="006M", PatientID="other-patient",
                sop_class=CT_IMAGE_STORAGE)
    write_dicom(tmp_path / "mr.DCM", np.zeros((4, 4), np.uint16), Modality="MR", ViewPosition="", PatientSex="M",
                PatientAge="")
    (tmp_path / "README").write_text("not an image")
    (tmp_path / "a" / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden.dcm").write_bytes(b"AppleDouble junk")

    data = dicom.read(tmp_path)

    assert data.format == "dicom" and data.label_names == () and data.skipped == []
    assert data.loader is dicom.read_dicom_pixels
    by_name = {record.path.rsplit("/", 1)[-1]: record for record in data.records}
    assert [r.path for r in data.records] == sorted(r.path for r in data.records)
    assert sorted(by_name) == ["1.2.840.99.7", "IM0002", "frontal.dcm", "mr.DCM"]
    frontal, lateral = by_name["frontal.dcm"], by_name["IM0002"]
    assert frontal == ImageRecord(
        image_id=pseudonym(first.SOPInstanceUID), subject_id=pseudonym(PHI["PatientID"]),
        study_id=pseudonym(study), view="PA", modality="XR", anatomy="chest", labels=(), sex="F", age=45.0,
        path=str(tmp_path / "a" / "frontal.dcm"))
    assert (lateral.view, lateral.modality, lateral.study_id) == ("LL", "XR", frontal.study_id)
    assert lateral.is_lateral and frontal.is_frontal
    ct = by_name["1.2.840.99.7"]
    assert (ct.subject_id, ct.modality, ct.anatomy, ct.sex, ct.age) == (
        pseudonym("other-patient"), "CT", "abdomen", "", 0.5)
    mr = by_name["mr.DCM"]
    assert (mr.view, mr.modality, mr.sex, mr.anatomy) == ("", "MR", "M", "") and math.isnan(mr.age)


def test_a_single_file_is_a_dataset_of_one(tmp_path):
    path = tmp_path / "one.dcm"
    write_dicom(path, np.zeros((3, 3), np.uint8), ViewPosition="ap", Modality="OT")
    data = dicom.read(path)
    assert [(r.path, r.view, r.modality) for r in data.records] == [(str(path), "AP", "OT")]


@pytest.mark.parametrize("age, years", [("045Y", 45.0), ("006M", 0.5), ("010W", 70 / 365.25), ("003D", 3 / 365.25),
                                        ("089Y", 89.0), ("095Y", 90.0), ("", math.nan), ("45", math.nan),
                                        ("abcY", math.nan)])
def test_patient_age_in_years(age, years):
    got = dicom.parse_age(age)
    assert (math.isnan(got) and math.isnan(years)) or got == pytest.approx(years, rel=1e-12)


def test_looks_like(tmp_path):
    (tmp_path / "tree" / "x").mkdir(parents=True)
    write_dicom(tmp_path / "tree" / "x" / "IM1", np.zeros((2, 2), np.uint8))
    (tmp_path / "pngs").mkdir()
    (tmp_path / "pngs" / "a.png").write_bytes(b"\x89PNG")
    (tmp_path / "pngs" / "NOTES").write_text("no marker")
    (tmp_path / "pngs" / ".b.dcm").write_bytes(b"hidden")
    assert dicom.looks_like(tmp_path / "tree") and dicom.looks_like(tmp_path / "tree" / "x" / "IM1")
    assert not dicom.looks_like(tmp_path / "pngs") and not dicom.looks_like(tmp_path / "pngs" / "NOTES")
    assert not dicom.looks_like(tmp_path / "missing")
    assert infer_format(tmp_path / "tree") == "dicom"


# === Pixel maths ===


def test_monochrome2_rescale_then_linear_window(tmp_path, stored):
    path = tmp_path / "w.dcm"
    write_dicom(path, stored, bits_stored=12, RescaleSlope="2", RescaleIntercept="-1024", WindowCenter="1500",
                WindowWidth="3001")
    expected = linear_window(stored * 2.0 - 1024.0, 1500.0, 3001.0)
    check(dicom.read_dicom_pixels(path), expected)
    assert 0.0 < expected.mean() < 1.0 and (expected == 0.0).any() and (expected == 1.0).any()


def test_monochrome1_is_inverted(tmp_path, stored):
    for name, photometric in (("m1.dcm", "MONOCHROME1"), ("m2.dcm", "MONOCHROME2")):
        write_dicom(tmp_path / name, stored, photometric=photometric, bits_stored=12, WindowCenter="2000",
                    WindowWidth="2500")
    m1, m2 = dicom.read_dicom_pixels(tmp_path / "m1.dcm"), dicom.read_dicom_pixels(tmp_path / "m2.dcm")
    check(m1, 1.0 - linear_window(stored, 2000.0, 2500.0))
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)
    brightest = np.unravel_index(np.argmin(stored), stored.shape)  # lowest stored value, MONOCHROME1 -> white
    assert m1[brightest] == m1.max()


def test_without_window_min_max_over_the_image(tmp_path, stored):
    write_dicom(tmp_path / "m.dcm", stored, bits_stored=12, RescaleSlope="0.5", RescaleIntercept="10")
    check(dicom.read_dicom_pixels(tmp_path / "m.dcm"), min_max(stored * 0.5 + 10.0))
    write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1", bits_stored=12)
    check(dicom.read_dicom_pixels(tmp_path / "m1.dcm"), 1.0 - min_max(stored))


def test_eight_bit_and_signed_sixteen_bit(tmp_path, rng):
    eight = rng.integers(0, 256, size=(6, 5)).astype(np.uint8)
    write_dicom(tmp_path / "u8.dcm", eight)
    check(dicom.read_dicom_pixels(tmp_path / "u8.dcm"), min_max(eight))
    signed = rng.integers(-2000, 2000, size=(6, 5)).astype(np.int16)
    write_dicom(tmp_path / "s16.dcm", signed, RescaleSlope="1", RescaleIntercept="-1000", WindowCenter="-600",
                WindowWidth="1500", sop_class=CT_IMAGE_STORAGE, Modality="CT")
    check(dicom.read_dicom_pixels(tmp_path / "s16.dcm"), linear_window(signed - 1000.0, -600.0, 1500.0))


def test_first_of_several_windows_and_width_one(tmp_path, stored):
    write_dicom(tmp_path / "multi.dcm", stored, bits_stored=12, WindowCenter=["1000", "3000"],
                WindowWidth=["800", "100"])
    check(dicom.read_dicom_pixels(tmp_path / "multi.dcm"), linear_window(stored, 1000.0, 800.0))
    write_dicom(tmp_path / "step.dcm", stored, bits_stored=12, WindowCenter="2048", WindowWidth="1")
    check(dicom.read_dicom_pixels(tmp_path / "step.dcm"), (stored > 2047.5).astype(np.float64))


@pytest.mark.parametrize("function", ["LINEAR_EXACT", "SIGMOID"])
def test_other_voi_functions(tmp_path, stored, function):
    write_dicom(tmp_path / "f.dcm", stored, bits_stored=12, WindowCenter="2000", WindowWidth="1000",
                VOILUTFunction=function)
    x = stored.astype(np.float64)
    expected = (np.clip((x - 2000.0) / 1000.0 + 0.5, 0.0, 1.0) if function == "LINEAR_EXACT"
                else 1.0 / (1.0 + np.exp(-4.0 * (x - 2000.0) / 1000.0)))
    check(dicom.read_dicom_pixels(tmp_path / "f.dcm"), expected)


def test_modality_lut_sequence(tmp_path, rng):
    stored = rng.integers(0, 256, size=(4, 6)).astype(np.uint16)
    lut = (np.arange(200) ** 2 // 7).astype(np.uint16)  # first mapped 30: x < 30 -> lut[0], x > 229 -> lut[-1]
    item = Dataset()
    item.LUTDescriptor = [len(lut), 30, 16]
    item.ModalityLUTType = "US"
    item.add_new("LUTData", "OW", lut.tobytes())
    write_dicom(tmp_path / "lut.dcm", stored, bits_stored=8, ModalityLUTSequence=[item])
    check(dicom.read_dicom_pixels(tmp_path / "lut.dcm"), min_max(lut[np.clip(stored.astype(int) - 30, 0, 199)]))


def test_rgb_becomes_luma(tmp_path, rng):
    rgb = rng.integers(0, 256, size=(4, 5, 3)).astype(np.uint8)
    write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB")
    luma = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0
    check(dicom.read_dicom_pixels(tmp_path / "rgb.dcm"), luma)


def test_ybr_full_becomes_luma(tmp_path, rng):
    rgb = rng.integers(0, 256, size=(4, 5, 3)).astype(np.uint8)
    red, green, blue = (rgb[..., i].astype(np.float64) for i in range(3))
    ybr = np.stack([0.299 * red + 0.587 * green + 0.114 * blue,  # PS3.3 C.7.6.3.1.2 YBR_FULL
                    -0.1687 * red - 0.3313 * green + 0.5 * blue + 128,
                    0.5 * red - 0.4187 * green - 0.0813 * blue + 128], axis=-1)
    write_dicom(tmp_path / "ybr.dcm", np.clip(np.round(ybr), 0, 255).astype(np.uint8), photometric="YBR_FULL")
    luma = (0.299 * red + 0.587 * green + 0.114 * blue) / 255.0
    np.testing.assert_allclose(dicom.read_dicom_pixels(tmp_path / "ybr.dcm"), luma, atol=2.5 / 255)


def test_multi_frame_gives_the_first_frame(tmp_path, rng):
    frames = rng.integers(0, 4096, size=(3, 4, 5)).astype(np.uint16)
    write_dicom(tmp_path / "mf.dcm", frames, bits_stored=12, WindowCenter="2048", WindowWidth="4096")
    check(dicom.read_dicom_pixels(tmp_path / "mf.dcm"), linear_window(frames[0], 2048.0, 4096.0))


def test_enhanced_multi_frame_functional_groups(tmp_path, rng):
    frames = rng.integers(0, 4096, size=(2, 4, 5)).astype(np.uint16)
    transform, voi, shared = Dataset(), Dataset(), Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = "1", "-1024", "HU"
    voi.WindowCenter, voi.WindowWidth = "40", "400"
    shared.PixelValueTransformationSequence = [transform]
    shared.FrameVOILUTSequence = [voi]
    write_dicom(tmp_path / "enh.dcm", frames, bits_stored=12, SharedFunctionalGroupsSequence=[shared])
    check(dicom.read_dicom_pixels(tmp_path / "enh.dcm"), linear_window(frames[0] - 1024.0, 40.0, 400.0))


def test_rle_compressed_matches_uncompressed(tmp_path, stored):
    write_dicom(tmp_path / "plain.dcm", stored, bits_stored=12, WindowCenter="2000", WindowWidth="3000")
    ds = write_dicom(tmp_path / "tmp.dcm", stored, bits_stored=12, WindowCenter="2000", WindowWidth="3000")
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    assert dicom.read(tmp_path / "rle.dcm").records
    np.testing.assert_array_equal(dicom.read_dicom_pixels(tmp_path / "rle.dcm"),
                                  dicom.read_dicom_pixels(tmp_path / "plain.dcm"))


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_other_uncompressed_transfer_syntaxes(tmp_path, stored, syntax):
    ds = write_dicom(tmp_path / "x.dcm", stored, bits_stored=12, WindowCenter="2000", WindowWidth="3000")
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(tmp_path / "x.dcm")
    assert len(dicom.read(tmp_path / "x.dcm").records) == 1
    check(dicom.read_dicom_pixels(tmp_path / "x.dcm"), linear_window(stored, 2000.0, 3000.0))
    if syntax == ImplicitVRLittleEndian:  # 8-byte element header before the pixel data
        (tmp_path / "cut.dcm").write_bytes((tmp_path / "x.dcm").read_bytes()[:-1])
        with pytest.raises(DataError, match="truncated pixel data"):
            dicom.read(tmp_path / "cut.dcm")


def test_loader_accepts_a_record(tmp_path, stored):
    write_dicom(tmp_path / "r.dcm", stored)
    data = dicom.read(tmp_path)
    check(data.loader(data.records[0]), min_max(stored))


# === Rejections ===


def bad_files(folder, stored):
    """Files that must each be rejected: {name: a word the problem names}."""
    folder.mkdir(exist_ok=True)
    write_dicom(folder / "no_pixels.dcm", None)
    (folder / "not_dicom.dcm").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300))
    write_dicom(folder / "whole.dcm", stored)
    whole = (folder / "whole.dcm").read_bytes()
    (folder / "truncated.dcm").write_bytes(whole[:-9])
    (folder / "truncated_header.dcm").write_bytes(whole[:200])
    (folder / "whole.dcm").unlink()
    write_dicom(folder / "no_patient.dcm", stored, PatientID="")
    return {"no_pixels.dcm": "no pixel data", "not_dicom.dcm": "not a DICOM file", "truncated.dcm": "truncated",
            "truncated_header.dcm": "no pixel data", "no_patient.dcm": "PatientID"}


def test_bad_files_raise_naming_the_file_or_are_skipped_and_counted(tmp_path, stored):
    problems = bad_files(tmp_path / "bad", stored)
    for name, word in problems.items():
        with pytest.raises(DataError, match=word) as caught:
            dicom.read(tmp_path / "bad" / name)
        assert str(tmp_path / "bad" / name) in str(caught.value)
    write_dicom(tmp_path / "bad" / "good.dcm", stored)
    with pytest.raises(DataError, match="no_patient.dcm"):  # the first bad file in sorted order
        dicom.read(tmp_path / "bad")
    data = dicom.read(tmp_path / "bad", on_error="skip")
    assert [r.path for r in data.records] == [str(tmp_path / "bad" / "good.dcm")]
    assert sorted(file.rsplit("/", 1)[-1] for file, _ in data.skipped) == sorted(problems)
    assert all(problems[file.rsplit("/", 1)[-1]] in problem for file, problem in data.skipped)


@pytest.mark.parametrize("name", ["no_pixels.dcm", "not_dicom.dcm", "truncated.dcm", "truncated_header.dcm"])
def test_loading_a_bad_file_raises_naming_it(tmp_path, stored, name):
    bad_files(tmp_path, stored)
    with pytest.raises(DataError) as caught:
        dicom.read_dicom_pixels(tmp_path / name)
    assert str(tmp_path / name) in str(caught.value)


def test_duplicate_sop_instance_uid(tmp_path, stored):
    uid = generate_uid()
    write_dicom(tmp_path / "a.dcm", stored, SOPInstanceUID=uid)
    write_dicom(tmp_path / "b.dcm", stored, SOPInstanceUID=uid)
    with pytest.raises(DataError, match=r"b\.dcm: same SOPInstanceUID as .*a\.dcm"):
        dicom.read(tmp_path)
    data = dicom.read(tmp_path, on_error="skip")
    assert len(data.records) == 1 and len(data.skipped) == 1


def test_dicomdir_is_passed_over_in_a_folder(tmp_path, stored):
    write_dicom(tmp_path / "DICOMDIR", None, sop_class="1.2.840.10008.1.3.10")
    write_dicom(tmp_path / "img.dcm", stored)
    assert [r.path for r in dicom.read(tmp_path).records] == [str(tmp_path / "img.dcm")]


def test_compressed_without_a_decoder(tmp_path):
    path = tmp_path / "jls.dcm"
    ds = write_dicom(path, np.zeros((4, 4), np.uint16))
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7 not really JPEG-LS \xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path)
    assert len(dicom.read(path).records) == 1  # listing does not decode
    expected = "needs a decoder" if not get_decoder(JPEGLSLossless).is_available else "corrupt"
    with pytest.raises(DataError, match=expected) as caught:
        dicom.read_dicom_pixels(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("elements, word", [
    ({"WindowCenter": "10", "WindowWidth": "0"}, "invalid VOI window"),
    ({"WindowCenter": "10", "WindowWidth": "0.5"}, "invalid VOI window"),
    ({"WindowCenter": "10", "WindowWidth": "20", "VOILUTFunction": "CUBIC"}, "VOILUTFunction"),
    ({"WindowCenter": "9753", "WindowWidth": "20"}, "VOI window attributes"),  # patched to "ten!" below
])
def test_unusable_window_raises(tmp_path, stored, elements, word):
    write_dicom(tmp_path / "w.dcm", stored, **elements)
    content = (tmp_path / "w.dcm").read_bytes()
    if content.count(b"9753") == 1:
        (tmp_path / "w.dcm").write_bytes(content.replace(b"9753", b"ten!"))
    with pytest.raises(DataError, match=word):
        dicom.read_dicom_pixels(tmp_path / "w.dcm")


def test_unsupported_photometric_interpretation(tmp_path, stored):
    write_dicom(tmp_path / "p.dcm", stored.astype(np.uint8), photometric="PALETTE COLOR")
    with pytest.raises(DataError, match="PhotometricInterpretation"):
        dicom.read_dicom_pixels(tmp_path / "p.dcm")


def test_missing_root_and_folder_without_dicom(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        dicom.read(tmp_path / "missing")
    (tmp_path / "README").write_text("hello")
    with pytest.raises(DataError, match="no DICOM files"):
        dicom.read(tmp_path)
    with pytest.raises(ValueError, match="on_error"):
        dicom.read(tmp_path, on_error="ignore")


# === Privacy ===


def test_identifiers_never_leave_the_reader(tmp_path, stored, caplog):
    caplog.set_level(logging.DEBUG)
    folder = tmp_path / "phi"
    problems = bad_files(folder, stored)
    write_dicom(folder / "good.dcm", stored, ViewPosition="PA", PatientSex="F", PatientAge="033Y")
    write_dicom(folder / "long_id.dcm", stored, PatientID="X" * 70 + PHI["PatientID"])  # over LO's 64 chars
    write_dicom(folder / "bad_uid.dcm", stored, StudyInstanceUID=BAD_UID, PatientSex="f")
    caplog.clear()
    texts = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = dicom.read(folder, on_error="skip")
        texts += [repr(data), repr(data.records), repr(data.skipped)]
        for record in data.records:
            texts += [str(value) for value in vars(record).values()]
            texts.append(repr(dicom.read_dicom_pixels(record)))
        for name in problems:
            for action in (dicom.read, dicom.read_dicom_pixels):
                if (name, action) == ("no_patient.dcm", dicom.read_dicom_pixels):
                    continue  # the pixels are fine; only the listing needs a PatientID
                with pytest.raises(DataError) as error:
                    action(folder / name)
                texts.append("".join(traceback.format_exception(error.value)))
    texts += [str(warning.message) for warning in caught] + [caplog.text]
    assert len(data.records) == 3 and len(data.skipped) == len(problems)
    everything = "\n".join(texts)
    for value in (*PHI.values(), BAD_UID):
        assert value not in everything
        assert value.split("^")[0] not in everything
    assert (folder / "good.dcm").read_bytes().count(PHI["PatientID"].encode()) == 1  # the files do carry it
