"""MIMIC-CXR-JPG reader: layout, views, labels, pairing, official split and every bad-input case."""

import csv
import gzip
import io
import shutil

import numpy as np
import pytest
from PIL import Image

from kmedssl.data.errors import DataError
from kmedssl.data.formats import mimic_cxr
from kmedssl.data.formats.chexpert_labels import CHEXPERT_LABELS
from kmedssl.data.pairing import study_pairs

pytestmark = pytest.mark.backend_free

META = "mimic-cxr-2.0.0-metadata.csv.gz"
LABELS = "mimic-cxr-2.0.0-chexpert.csv.gz"
SPLIT = "mimic-cxr-2.0.0-split.csv.gz"
META_HEADER = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
               "Columns"]
LABEL_HEADER = ["subject_id", "study_id"] + sorted(CHEXPERT_LABELS)  # the release's alphabetical order
# (subject, study) -> [(dicom_id, ViewPosition)]
STUDIES = {
    ("10000001", "50000001"): [("d01", "PA"), ("d02", "LATERAL")],
    ("10000001", "50000002"): [("d03", "PA"), ("d04", "AP"), ("d05", "LL"), ("d06", "LATERAL")],
    ("10000002", "50000003"): [("d07", "AP")],
    ("10000003", "50000004"): [("d08", "LL")],
    ("10000003", "50000005"): [("d09", "AP AXIAL"), ("d10", ""), ("d11", "pa")],
}
SPLITS = {"10000001": "train", "10000002": "validate", "10000003": "test"}


def base_tables():
    """The three tables as lists of rows (header first); tests edit them before ``write``."""
    metadata = [META_HEADER] + [[dicom, subject, study, "CHEST", view, "4", "4"]
                                for (subject, study), images in STUDIES.items() for dicom, view in images]
    chexpert = [LABEL_HEADER]
    for n, (subject, study) in enumerate(STUDIES):
        values = {name: "" for name in CHEXPERT_LABELS}
        values["Cardiomegaly"] = "1.0" if n % 2 == 0 else "0.0"
        values["Edema"] = "-1.0"
        values["No Finding"] = "1.0" if n % 2 == 1 else ""
        chexpert.append([subject, study] + [values[name] for name in LABEL_HEADER[2:]])
    split = [["dicom_id", "study_id", "subject_id", "split"]] + [
        [dicom, study, subject, SPLITS[subject]] for (subject, study), images in STUDIES.items() for dicom, _ in images]
    return {"metadata": metadata, "chexpert": chexpert, "split": split}


def write(root, tables, folder="", compress=True, missing=()):
    """Write the tables (``.csv.gz`` or ``.csv``, in ``root/folder``) and a tiny JPEG per metadata row."""
    names = {"metadata": META, "chexpert": LABELS, "split": SPLIT}
    (root / folder).mkdir(parents=True, exist_ok=True)
    for key, rows in tables.items():
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        name = names[key] if compress else names[key][:-3]
        if compress:
            (root / folder / name).write_bytes(gzip.compress(text.getvalue().encode()))
        else:
            (root / folder / name).write_text(text.getvalue())
    for dicom, subject, study, *_ in tables["metadata"][1:]:
        if dicom in missing:
            continue
        path = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4), 128, np.uint8)).save(path, quality=95)
    return root


@pytest.fixture
def root(tmp_path):
    return write(tmp_path / "mimic", base_tables())


def by_id(dataset):
    return {r.image_id: r for r in dataset.records}


# === Reading ===


def test_reads_every_image_with_its_study_view_labels_and_path(root):
    ds = mimic_cxr.read(root)
    records = by_id(ds)
    assert ds.format == "mimic-cxr" and ds.label_names == CHEXPERT_LABELS and ds.skipped == []
    assert sorted(records) == sorted(d for images in STUDIES.values() for d, _ in images)
    assert [records[d].view for d in ("d01", "d02", "d05", "d09", "d10", "d11")] == \
        ["PA", "LATERAL", "LL", "AP AXIAL", "", "PA"]
    r = records["d03"]
    assert (r.subject_id, r.study_id, r.modality, r.anatomy) == ("10000001", "50000002", "XR", "chest")
    assert r.path == str(root / "files" / "p10" / "p10000001" / "s50000002" / "d03.jpg")
    labels = dict(zip(CHEXPERT_LABELS, records["d01"].labels))
    assert labels["Cardiomegaly"] == 1.0 and labels["Edema"] == 0.0 and labels["No Finding"] == 0.0
    assert sum(labels.values()) == 1.0
    labels = dict(zip(CHEXPERT_LABELS, records["d03"].labels))
    assert labels["Cardiomegaly"] == 0.0 and labels["No Finding"] == 1.0 and sum(labels.values()) == 1.0


def test_pairs_every_frontal_with_every_lateral_of_a_study(root):
    pairs = study_pairs(mimic_cxr.read(root).records)
    ids = sorted((f.image_id, l.image_id) for f, l in pairs)
    # 1x1 in study 1; 2 frontals x 2 laterals in study 2; the one-view, lateral-only and
    # AP AXIAL/blank + PA studies give none.
    assert ids == [("d01", "d02"), ("d03", "d05"), ("d03", "d06"), ("d04", "d05"), ("d04", "d06")]


def test_official_split_maps_validate_to_val(root):
    ds = mimic_cxr.read(root)
    assert ds.splits == {"10000001": "train", "10000002": "val", "10000003": "test"}


def test_without_split_file_there_are_no_official_splits(tmp_path):
    tables = base_tables()
    del tables["split"]
    assert mimic_cxr.read(write(tmp_path, tables)).splits is None


def test_plain_csvs_in_a_metadata_subfolder(tmp_path):
    ds = mimic_cxr.read(write(tmp_path, base_tables(), folder="metadata", compress=False))
    assert len(ds.records) == 11 and ds.splits is not None


def test_looks_like(root, tmp_path):
    assert mimic_cxr.looks_like(root)
    assert mimic_cxr.looks_like(root.parent)  # the tables are found one folder down
    assert not mimic_cxr.looks_like(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    assert not mimic_cxr.looks_like(tmp_path / "empty")


# === Bad input: raise names the file (and line), skip leaves the item out and counts it ===


def _edit_metadata(column, dicom, value):
    def edit(tables):
        row = next(r for r in tables["metadata"] if r[0] == dicom)
        row[META_HEADER.index(column)] = value
    return edit


def _edit_label(study, column, value):
    def edit(tables):
        row = next(r for r in tables["chexpert"] if r[1] == study)
        row[LABEL_HEADER.index(column)] = value
    return edit


def _drop_label_row(study):
    def edit(tables):
        tables["chexpert"] = [r for r in tables["chexpert"] if r[1] != study]
    return edit


def _leak(tables):
    row = next(r for r in tables["split"] if r[0] == "d07")
    row[3] = "test"
    tables["split"].append(["d99", "50000099", "10000002", "train"])


def _bad_split_value(tables):
    for row in tables["split"]:
        if row[2] == "10000002":
            row[3] = "holdout"


def _short_row(tables):
    row = next(r for r in tables["metadata"] if r[0] == "d07")
    del row[3:]


def _duplicate_dicom(tables):
    tables["metadata"].append(list(tables["metadata"][1]))


# (name, edit, missing images, table with the problem, its line, message part, images left out)
BAD = [
    ("missing image", None, ("d07",), META, 8, "image file not found", {"d07"}),
    ("unknown view", _edit_metadata("ViewPosition", "d02", "OBLIQUE"), (), META, 3, "unknown ViewPosition",
     {"d02"}),
    ("study without labels", _drop_label_row("50000003"), (), META, 8, "has no labels row", {"d07"}),
    ("bad label value", _edit_label("50000002", "Edema", "2.0"), (), LABELS, 3, "'2.0'",
     {"d03", "d04", "d05", "d06"}),
    ("blank-looking nan label", _edit_label("50000003", "Fracture", "nan"), (), LABELS, 4, "'nan'", {"d07"}),
    ("malformed subject id", _edit_metadata("subject_id", "d07", "p10000002"), (), META, 8, "malformed subject_id",
     {"d07"}),
    ("malformed dicom id", _edit_metadata("dicom_id", "d07", "../d07"), (), META, 8, "malformed dicom_id",
     {"d07", "../d07"}),
    ("repeated dicom id", _duplicate_dicom, (), META, 13, "repeats line 2", set()),
    ("too few fields", _short_row, (), META, 8, "fields", {"d07"}),
    ("unknown split value", _bad_split_value, (), SPLIT, None, "'holdout'", {"d07"}),
    ("leaking split", _leak, (), SPLIT, None, "more than one split", {"d07"}),
]


def _build(tmp_path, edit, missing):
    tables = base_tables()
    if edit is not None:
        edit(tables)
    return write(tmp_path / "mimic", tables, missing=missing)


@pytest.mark.parametrize("name, edit, missing, table, line, part, left_out", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_naming_file_and_line(tmp_path, name, edit, missing, table, line, part, left_out):
    root = _build(tmp_path, edit, missing)
    with pytest.raises(DataError) as info:
        mimic_cxr.read(root)
    message = str(info.value)
    assert str(root / table) in message and part in message
    if line is not None:
        assert f"line {line}" in message


@pytest.mark.parametrize("name, edit, missing, table, line, part, left_out", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_skipped_and_counted(tmp_path, name, edit, missing, table, line, part, left_out):
    ds = mimic_cxr.read(_build(tmp_path, edit, missing), on_error="skip")
    all_ids = {d for images in STUDIES.values() for d, _ in images}
    assert set(by_id(ds)) == all_ids - left_out
    assert len(ds.records) == len(all_ids - left_out)  # a repeated dicom_id is read once
    assert part in ds.skipped[0][1]  # the first problem is the planted one
    assert {file for file, _ in ds.skipped} == {str(ds.root / table)}


def test_leaking_subject_is_reported_with_both_places(tmp_path):
    root = _build(tmp_path, _leak, ())
    with pytest.raises(DataError, match=r"subject 10000002 is in more than one split \(test at line \d+, "
                                        r"train at line \d+\)"):
        mimic_cxr.read(root)
    ds = mimic_cxr.read(root, on_error="skip")
    assert "10000002" not in ds.splits and len(ds.skipped) == 1


def test_a_subject_without_split_row_is_a_problem(tmp_path):
    tables = base_tables()
    tables["split"] = [r for r in tables["split"] if r[2] != "10000003"]
    root = write(tmp_path, tables)
    with pytest.raises(DataError, match="subject 10000003 has 4 images but no split row"):
        mimic_cxr.read(root)
    ds = mimic_cxr.read(root, on_error="skip")
    assert {r.subject_id for r in ds.records} == {"10000001", "10000002"} and len(ds.skipped) == 1


def test_skip_counts_every_problem_once(tmp_path):
    tables = base_tables()
    _edit_metadata("ViewPosition", "d02", "OBLIQUE")(tables)
    _drop_label_row("50000003")(tables)
    ds = mimic_cxr.read(write(tmp_path, tables, missing=("d11",)), on_error="skip")
    assert len(ds.skipped) == 3 and len(ds.records) == 8


# === Whole-file problems always raise ===


def test_missing_labels_table_raises(tmp_path):
    tables = base_tables()
    del tables["chexpert"]
    with pytest.raises(DataError, match="mimic-cxr-2.0.0-chexpert.csv"):
        mimic_cxr.read(write(tmp_path, tables), on_error="skip")


def test_missing_files_folder_raises(root):
    shutil.rmtree(root / "files")
    with pytest.raises(DataError, match="no files/ folder"):
        mimic_cxr.read(root)


def test_missing_column_raises_naming_the_table(tmp_path):
    tables = base_tables()
    tables["metadata"] = [row[:4] + row[5:] for row in tables["metadata"]]  # no ViewPosition
    with pytest.raises(DataError, match=r"metadata\.csv\.gz: missing columns \['ViewPosition'\]"):
        mimic_cxr.read(write(tmp_path, tables), on_error="skip")


def test_truncated_gzip_raises(root):
    data = (root / META).read_bytes()
    (root / META).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="unreadable CSV"):
        mimic_cxr.read(root, on_error="skip")


def test_csv_and_csv_gz_side_by_side_is_ambiguous(root):
    (root / META[:-3]).write_text(gzip.decompress((root / META).read_bytes()).decode())
    with pytest.raises(DataError, match="several candidates"):
        mimic_cxr.read(root)
