"""Generic folder/CSV reader on small generated files: CSV columns, plain folders, every rejected input."""

import math

import numpy as np
import pytest
from PIL import Image

from kmedssl.data.errors import DataError
from kmedssl.data.formats import folder

pytestmark = pytest.mark.backend_free

HEADER = "path,subject,study,view,modality,anatomy,sex,age,split,label_a,label_b,score"
GOOD_ROWS = [
    "img/0.png,s1,t1,PA,XR,Chest,F,61,train,1.0,0.0,7.5",
    "img/1.png,s1,t1,lateral,CR,chest,female,61,train,1,-1.0,7.5",
    "img/2.png,s2,t2,,MRI,knee,M,,test,,-1,3",
    "img/3.png,s3,t3,axial,ct,brain,,40.5,val,0,1,0",
]


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((5, 5), 9, np.uint8)).save(path)
    return path


def _table(root, rows, header=HEADER, name="labels.csv"):
    for k in range(4):
        _png(root / "img" / f"{k}.png")
    (root / name).write_text("\n".join([header] + rows) + "\n")
    return root


def test_csv_columns_labels_and_splits(tmp_path):
    dataset = folder.read(_table(tmp_path, GOOD_ROWS))
    assert dataset.format == "folder" and dataset.label_names == ("a", "b") and dataset.skipped == []
    r0, r1, r2, r3 = dataset.records
    assert (r0.image_id, r0.subject_id, r0.study_id, r0.view, r0.modality, r0.anatomy, r0.sex, r0.age) == (
        "img/0.png", "s1", "t1", "PA", "XR", "chest", "F", 61.0)
    assert r0.path == str(tmp_path / "img/0.png")
    assert (r1.view, r1.modality, r1.sex) == ("LATERAL", "XR", "F")
    assert (r2.view, r2.modality, r2.sex) == ("", "MR", "M") and math.isnan(r2.age)
    assert (r3.view, r3.modality, r3.age) == ("AXIAL", "CT", 40.5)
    # 1.0 -> 1; 0.0, -1.0 and blank -> 0; the numeric "score" column is not a label.
    assert [r.labels for r in dataset.records] == [(1.0, 0.0), (1.0, 0.0), (0.0, 0.0), (0.0, 1.0)]
    assert dataset.splits == {"s1": "train", "s2": "test", "s3": "val"}


def test_csv_defaults_without_optional_columns(tmp_path):
    _png(tmp_path / "data/sub/x.png")
    table = tmp_path / "data/my_list.csv"
    table.write_text("path,other\nsub/x.png,5\n")
    dataset = folder.read(table)
    record = dataset.records[0]
    assert (record.image_id, record.subject_id, record.study_id) == ("sub/x.png",) * 3
    assert (record.view, record.modality, record.anatomy, record.labels) == ("", "", "", ())
    assert dataset.label_names == () and dataset.splits is None


def test_study_without_subject_is_its_own_subject(tmp_path):
    dataset = folder.read(_table(tmp_path, ["img/0.png,t9", "img/1.png,t9"], header="path,study",
                                 name="index.csv"))
    assert [(r.subject_id, r.study_id) for r in dataset.records] == [("t9", "t9"), ("t9", "t9")]


@pytest.mark.parametrize("row, message", [
    ("img/9.png,s4,t4,PA,XR,chest,F,1,train,1,0,0", r"img/9.png: image file cannot be read"),
    ("img/empty.png,s4,t4,PA,XR,chest,F,1,train,1,0,0", r"empty.png: empty image file \(0 bytes\)"),
    ("img/0.png,s4,t4,PA,XR,chest,F,1,train,1,0,0", "path 'img/0.png' repeats line 2"),
    (",s4,t4,PA,XR,chest,F,1,train,1,0,0", "blank path"),
    ("img/3.png,s4,t4,OBLIQUE,XR,chest,F,1,train,1,0,0", "unknown view 'OBLIQUE'"),
    ("img/3.png,s4,t4,PA,XR,chest,F,1,train,2,0,0", r"column 'label_a': label value '2' is not one of"),
    ("img/3.png,s4,t4,PA,XR,chest,F,1,train,1,yes,0", r"column 'label_b': label value 'yes'"),
    ("img/3.png,s4,t4,PA,XR,chest,X,1,train,1,0,0", "sex 'X'"),
    ("img/3.png,s4,t4,PA,XR,chest,F,-3,train,1,0,0", "age '-3'"),
    ("img/3.png,,t4,PA,XR,chest,F,1,train,1,0,0", "blank subject"),
    ("img/3.png,s4,,PA,XR,chest,F,1,train,1,0,0", "blank study"),
    ("img/3.png,s4,t4,PA,XR,chest,F,1,holdout,1,0,0", "split 'holdout'"),
    ("img/3.png,s4,t4,PA,XR,chest,F,1,train,1", "10 fields, the header has 12"),
])
def test_bad_rows_raise_naming_file_and_line_or_are_skipped(tmp_path, row, message):
    _table(tmp_path, GOOD_ROWS[:3] + [row])
    (tmp_path / "img/empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=rf"labels.csv: line 5.*{message}"):
        folder.read(tmp_path)
    dataset = folder.read(tmp_path, on_error="skip")
    assert [r.image_id for r in dataset.records] == ["img/0.png", "img/1.png", "img/2.png"]
    assert len(dataset.skipped) == 1 and dataset.skipped[0][0] == str(tmp_path / "labels.csv")


def test_row_with_two_bad_labels_is_skipped_once(tmp_path):
    _table(tmp_path, GOOD_ROWS[:3] + ["img/3.png,s4,t4,PA,XR,chest,F,1,train,5,7,0"])
    assert len(folder.read(tmp_path, on_error="skip").skipped) == 1


def test_subject_in_two_splits_is_leakage(tmp_path):
    _table(tmp_path, GOOD_ROWS[:3] + ["img/3.png,s1,t5,PA,XR,chest,F,1,test,1,0,0"])
    with pytest.raises(DataError, match="labels.csv: subject s1 is in more than one split"):
        folder.read(tmp_path)
    dataset = folder.read(tmp_path, on_error="skip")
    assert [r.subject_id for r in dataset.records] == ["s2"] and set(dataset.splits) == {"s2"}


def test_table_level_errors_always_raise(tmp_path):
    _table(tmp_path, ["img/0.png"], header="file")
    with pytest.raises(DataError, match="labels.csv: missing columns \\['path'\\]"):
        folder.read(tmp_path, on_error="skip")
    (tmp_path / "index.csv").write_text("path\nimg/0.png\n")
    with pytest.raises(DataError, match="both labels.csv and index.csv"):
        folder.read(tmp_path)
    (tmp_path / "index.csv").unlink()
    (tmp_path / "labels.csv").write_text("path,label_\nimg/0.png,1\n")
    with pytest.raises(DataError, match="without a label name"):
        folder.read(tmp_path)
    with pytest.raises(DataError, match="expected a .csv"):
        folder.read(tmp_path / "img/0.png")


def test_plain_folder_without_labels(tmp_path):
    for name in ("b.png", "a.jpg"):
        _png(tmp_path / name)
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden.png").write_bytes(b"ignored")
    dataset = folder.read(tmp_path)
    assert [(r.image_id, r.subject_id, r.study_id, r.labels) for r in dataset.records] == [
        ("a.jpg", "a.jpg", "a.jpg", ()), ("b.png", "b.png", "b.png", ())]
    assert dataset.label_names == ()


def test_plain_folder_with_one_class_per_sub_folder(tmp_path):
    for name in ("pneumonia/x.png", "normal/y.png", "normal/z.png"):
        _png(tmp_path / name)
    dataset = folder.read(tmp_path)
    assert dataset.label_names == ("normal", "pneumonia")
    assert [(r.image_id, r.labels) for r in dataset.records] == [
        ("normal/y.png", (1.0, 0.0)), ("normal/z.png", (1.0, 0.0)), ("pneumonia/x.png", (0.0, 1.0))]


def test_plain_folder_rejections(tmp_path):
    _png(tmp_path / "normal/y.png")
    (tmp_path / "normal/empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.png: empty image file \(0 bytes\)"):
        folder.read(tmp_path)
    dataset = folder.read(tmp_path, on_error="skip")
    assert [r.image_id for r in dataset.records] == ["normal/y.png"] and len(dataset.skipped) == 1
    _png(tmp_path / "stray.png")
    with pytest.raises(DataError, match=r"images at depths \[1, 2\]"):
        folder.read(tmp_path, on_error="skip")
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(DataError, match="nothing: no image files"):
        folder.read(empty)


def test_looks_like(tmp_path):
    assert not folder.looks_like(tmp_path)
    _png(tmp_path / "cls/x.png")
    assert folder.looks_like(tmp_path)
    table = tmp_path / "t.csv"
    table.write_text("path,label_a\ncls/x.png,1\n")
    assert folder.looks_like(table)
    table.write_text("file\ncls/x.png\n")
    assert not folder.looks_like(table)
    assert not folder.looks_like(tmp_path / "cls/x.png")
    deep = tmp_path / "deep"
    _png(deep / "a/b/c.png")
    assert not folder.looks_like(deep)
