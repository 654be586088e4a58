"""ChestX-ray14 reader: Data_Entry_2017.csv, image folders, finding labels, official lists, bad input."""

import math

import numpy as np
import pytest
from PIL import Image

from kmedssl.data.errors import DataError
from kmedssl.data.formats import chestxray14
from kmedssl.data.formats.chestxray14 import CXR14_LABELS
from kmedssl.data.pairing import study_pairs

pytestmark = pytest.mark.backend_free

TABLE = "Data_Entry_2017.csv"
# The release's header ends with a comma (an unnamed empty 12th column); its rows have 11 fields.
HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")
ROWS = [  # image, findings, follow-up, patient, age, gender, view; the image folder
    (["00000001_000.png", "Cardiomegaly|Effusion", "0", "1", "58", "M", "PA"], "images_001/images"),
    (["00000001_001.png", "No Finding", "1", "1", "58", "M", "AP"], "images_001/images"),
    (["00000002_000.png", "Hernia", "0", "2", "81", "F", "PA"], "images_002/images"),
    (["00000003_000.png", "Pleural_Thickening|Mass", "0", "3", "", "F", "AP"], "images"),
]
LISTS = {"train_val_list.txt": ["00000001_000.png", "00000001_001.png", "00000002_000.png"],
         "test_list.txt": ["00000003_000.png"]}


def write(root, rows=ROWS, lists=LISTS, missing=(), copies=()):
    """The table, a 4x4 PNG per row in its folder (plus ``copies``: (name, folder)) and the split lists."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [HEADER] + [",".join(fields + ["2500", "2048", "0.143", "0.143"]) for fields, _ in rows]
    (root / TABLE).write_text("\n".join(lines) + "\n")
    for name, folder in [(fields[0], folder) for fields, folder in rows] + list(copies):
        if name in missing:
            continue
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / folder / name)
    for name, images in lists.items():
        (root / name).write_text("\n".join(images) + "\n")
    return root


@pytest.fixture
def root(tmp_path):
    return write(tmp_path / "cxr14")


def by_id(dataset):
    return {r.image_id: r for r in dataset.records}


def test_reads_images_labels_views_and_subjects(root):
    ds = chestxray14.read(root)
    assert ds.format == "chestxray14" and ds.label_names == CXR14_LABELS and ds.skipped == []
    records = by_id(ds)
    r = records["00000001_000.png"]
    assert (r.subject_id, r.study_id, r.view, r.sex, r.age) == ("1", "1_0", "PA", "M", 58.0)
    assert r.path == str(root / "images_001" / "images" / "00000001_000.png")
    assert dict(zip(CXR14_LABELS, r.labels)) == {name: float(name in ("Cardiomegaly", "Effusion"))
                                                 for name in CXR14_LABELS}
    assert records["00000001_001.png"].labels == (0.0,) * 14 and records["00000001_001.png"].study_id == "1_1"
    assert records["00000003_000.png"].labels[CXR14_LABELS.index("Pleural_Thickening")] == 1.0
    assert math.isnan(records["00000003_000.png"].age)
    assert records["00000003_000.png"].path == str(root / "images" / "00000003_000.png")
    assert study_pairs(ds.records) == []  # frontal-only data set


def test_official_lists_give_train_and_test(root):
    assert chestxray14.read(root).splits == {"1": "train", "2": "train", "3": "test"}


def test_without_lists_there_is_no_split_and_one_list_alone_raises(tmp_path):
    assert chestxray14.read(write(tmp_path / "a", lists={})).splits is None
    with pytest.raises(DataError, match="only one of the official split lists"):
        chestxray14.read(write(tmp_path / "b", lists={"test_list.txt": ["00000003_000.png"]}))


def test_looks_like(root, tmp_path):
    assert chestxray14.looks_like(root) and chestxray14.looks_like(root.parent)
    assert not chestxray14.looks_like(tmp_path / "absent")


def _row(index, position, value):
    rows = [(list(fields), folder) for fields, folder in ROWS]
    rows[index][0][position] = value
    return {"rows": rows}


LEAK = {"train_val_list.txt": LISTS["train_val_list.txt"] + ["00000003_000.png"],
        "test_list.txt": LISTS["test_list.txt"]}
UNLISTED = {"train_val_list.txt": LISTS["train_val_list.txt"][:2], "test_list.txt": LISTS["test_list.txt"]}
# (name, write arguments, file with the problem, line, message part, images left out)
BAD = [
    ("unknown finding", _row(2, 1, "Hernia|Covid"), TABLE, 4, "['Covid']", 1),
    ("No Finding with a finding", _row(1, 1, "No Finding|Mass"), TABLE, 3, "['No Finding']", 1),
    ("empty Finding Labels", _row(1, 1, ""), TABLE, 3, "Finding Labels ''", 1),
    ("lateral view", _row(0, 6, "LL"), TABLE, 2, "View Position 'LL'", 1),
    ("unknown gender", _row(0, 5, "X"), TABLE, 2, "gender 'X'", 1),
    ("bad age", _row(0, 4, "58Y?"), TABLE, 2, "Patient Age '58Y?'", 1),
    ("malformed patient id", _row(0, 3, "P1"), TABLE, 2, "malformed Patient ID", 1),
    ("missing image", {"missing": ("00000002_000.png",)}, TABLE, 4, "image file not found", 1),
    ("repeated image index", {"rows": ROWS + [ROWS[0]]}, TABLE, 6, "repeats line 2", 0),
    ("image in two folders", {"copies": [("00000002_000.png", "images_003/images")]},
     "images_003/images/00000002_000.png", None, "also found at", 0),
    ("subject in both lists", {"lists": LEAK}, "train_val_list.txt and", None, "more than one split", 1),
    ("subject in neither list", {"lists": UNLISTED}, "train_val_list.txt and", None, "no split row", 1),
]


@pytest.mark.parametrize("name, kwargs, file, line, part, left_out", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_naming_file_and_line(tmp_path, name, kwargs, file, line, part, left_out):
    root = write(tmp_path / "cxr14", **kwargs)
    with pytest.raises(DataError) as info:
        chestxray14.read(root)
    message = str(info.value)
    assert message.startswith(str(root / file)) and part in message
    if line is not None:
        assert f"line {line}" in message


@pytest.mark.parametrize("name, kwargs, file, line, part, left_out", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_skipped_and_counted(tmp_path, name, kwargs, file, line, part, left_out):
    ds = chestxray14.read(write(tmp_path / "cxr14", **kwargs), on_error="skip")
    assert len(ds.records) == len(ROWS) - left_out
    assert len(ds.skipped) == 1 and part in ds.skipped[0][1]
