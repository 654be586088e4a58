"""DICOM patient identifiers never reach logs, run directories or reports (SPEC §8).

DICOM files with planted identifiers (patient name, ID, birth date, accession number, and the study and
instance UIDs) are written with pydicom; ``kmedssl pretrain`` runs on them and ``kmedssl evaluate`` on the
run, through the CLI; then every byte the commands printed and every file they wrote (zip archives
— ``.keras``, ``.npz`` — member by member) is searched for each identifier.
"""

import zipfile

import numpy as np
from click.testing import CliRunner
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from kmedssl.cli import main

PATIENTS = 10
DX_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"


def identifiers(index):
    return {
        "PatientName": f"Privacyson^Hortensia{index:02d}",
        "PatientID": f"MRN-PHI-{48151600 + index}",
        "PatientBirthDate": f"1923{index % 12 + 1:02d}17",
        "AccessionNumber": f"ACC-PHI-{4200 + index}",
        "StudyInstanceUID": generate_uid(),
        "SOPInstanceUID": generate_uid(),
    }


def write_radiograph(path, planted, rng):
    """A 48 x 48 16-bit PA chest radiograph (DX) carrying the identifiers ``planted``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DX_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = planted["SOPInstanceUID"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = DX_IMAGE_STORAGE
    for key, value in planted.items():
        setattr(ds, key, value)
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined = "DX", "PA", "CHEST"
    ds.Rows = ds.Columns = 48
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.PixelData = rng.integers(0, 4096, size=(48, 48)).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def needles(planted):
    """Every form an identifier could be written in: the value, the name's parts, the ISO birth date."""
    date = planted["PatientBirthDate"]
    forms = [*planted.values(), *planted["PatientName"].split("^"), f"{date[:4]}-{date[4:6]}-{date[6:]}"]
    return [form.encode() for form in forms]


def written_bytes(folder):
    """``(name, bytes)`` of every file under ``folder``, and of every member of the zip archives among them."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        yield str(path), path.read_bytes()
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    yield f"{path}:{member}", archive.read(member)


def test_dicom_identifiers_never_reach_outputs(tmp_path):
    data, run = tmp_path / "dicoms", tmp_path / "run"
    data.mkdir()
    rng = np.random.default_rng(0)
    planted = [identifiers(i) for i in range(PATIENTS)]
    for i, values in enumerate(planted):
        write_radiograph(data / f"image-{i:02d}.dcm", values, rng)

    pretrain = CliRunner().invoke(main, [
        "pretrain", "spcl", "--data", str(data), "--format", "dicom", "--epochs", "1", "--steps-per-epoch", "2",
        "--batch-size", "4", "--image-size", "32", "--set", "patch_size=8", "--set", "data_size=60",
        "--checkpoint-every", "1", "--output", str(run)])
    assert pretrain.exit_code == 0, pretrain.output
    evaluate = CliRunner().invoke(main, ["evaluate", str(run), "--views", "frontal"])
    assert evaluate.exit_code == 0, evaluate.output
    assert (run / "checkpoints").is_dir() and (run / "reports").is_dir()

    planted_bytes = b"".join(content for _, content in written_bytes(data))
    assert all(value.encode() in planted_bytes for values in planted for value in values.values())  # the search works
    outputs = [("pretrain output", pretrain.output.encode()), ("evaluate output", evaluate.output.encode()),
               *written_bytes(run)]
    leaks = [(name, needle.decode()) for name, content in outputs for values in planted for needle in needles(values)
             if needle in content]
    assert leaks == []
