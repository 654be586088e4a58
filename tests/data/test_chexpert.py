"""CheXpert reader and the label collapsing / CSV helpers the chest readers share."""

import csv
import math

import numpy as np
import pytest
from PIL import Image

from kmedssl.data.errors import DataError
from kmedssl.data.formats import chexpert
from kmedssl.data.formats.chexpert_labels import CHEXPERT_LABELS, collapse_label, read_csv
from kmedssl.data.formats.common import ErrorPolicy
from kmedssl.data.pairing import study_pairs

pytestmark = pytest.mark.backend_free

HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"] + list(CHEXPERT_LABELS)
RELEASE = "CheXpert-v1.0-small"


def row(path, kind, code, sex="Female", age="60", **labels):
    values = {name: "" for name in CHEXPERT_LABELS}
    values.update({name.replace("_", " "): value for name, value in labels.items()})
    return [f"{RELEASE}/{path}", sex, age, kind, code] + [values[name] for name in CHEXPERT_LABELS]


def base_tables():
    train = [
        row("train/patient00001/study1/view1_frontal.jpg", "Frontal", "AP", Cardiomegaly="1.0", Edema="-1.0",
            Fracture="0.0"),
        row("train/patient00001/study1/view2_lateral.jpg", "Lateral", "", Cardiomegaly="1.0"),
        row("train/patient00001/study2/view1_frontal.jpg", "Frontal", "PA", sex="Female", age="61"),
        row("train/patient00001/study2/view2_frontal.jpg", "Frontal", "AP", sex="Female", age="61"),
        row("train/patient00001/study2/view3_lateral.jpg", "Lateral", "LL", sex="Female", age="61"),
        row("train/patient00002/study1/view1_frontal.jpg", "Frontal", "PA", sex="Unknown", age="",
            No_Finding="1.0"),
    ]
    valid = [
        row("valid/patient00003/study1/view1_frontal.jpg", "Frontal", "PA", sex="Male", age="45"),
        row("valid/patient00003/study1/view2_lateral.jpg", "Lateral", "", sex="Male", age="45"),
    ]
    return {"train.csv": [HEADER] + train, "valid.csv": [HEADER] + valid}


def write(base, tables, folder=RELEASE, missing=()):
    """Write the CSVs into ``base/folder`` and a tiny JPEG for every plain relative Path under ``base``."""
    root = base / folder
    root.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        with open(root / name, "w", newline="") as handle:
            csv.writer(handle).writerows(rows)
        for fields in rows[1:]:
            parts = fields[0].split("/")
            if fields[0] in missing or fields[0].startswith("/") or ".." in parts or len(parts) < 2:
                continue
            path = root.joinpath(*parts[1:])
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 4), 100, np.uint8)).save(path)
    return root


@pytest.fixture
def root(tmp_path):
    return write(tmp_path, base_tables())


def by_path(dataset):
    return {r.image_id.split("/", 1)[1]: r for r in dataset.records}


# === Reading ===


def test_reads_views_subjects_studies_sex_age_and_labels(root):
    ds = chexpert.read(root)
    assert ds.format == "chexpert" and ds.label_names == CHEXPERT_LABELS and ds.skipped == []
    records = by_path(ds)
    assert len(records) == 8
    r = records["train/patient00001/study1/view1_frontal.jpg"]
    assert (r.subject_id, r.study_id, r.view, r.sex, r.age) == ("patient00001", "study1", "AP", "F", 60.0)
    assert r.path == str(root / "train" / "patient00001" / "study1" / "view1_frontal.jpg")
    labels = dict(zip(CHEXPERT_LABELS, r.labels))
    assert labels["Cardiomegaly"] == 1.0 and sum(labels.values()) == 1.0  # -1.0, 0.0 and blank -> 0
    assert records["train/patient00001/study1/view2_lateral.jpg"].view == "LATERAL"
    assert records["train/patient00001/study2/view3_lateral.jpg"].view == "LL"
    unknown = records["train/patient00002/study1/view1_frontal.jpg"]
    assert unknown.sex == "" and math.isnan(unknown.age) and unknown.labels[0] == 1.0
    assert records["valid/patient00003/study1/view1_frontal.jpg"].sex == "M"


def test_pairs_and_one_view_studies(root):
    pairs = study_pairs(chexpert.read(root).records)
    names = sorted((f.image_id.rsplit("/", 3)[1:], l.image_id.rsplit("/", 1)[1]) for f, l in pairs)
    assert names == [
        (["patient00001", "study1", "view1_frontal.jpg"], "view2_lateral.jpg"),
        (["patient00001", "study2", "view1_frontal.jpg"], "view3_lateral.jpg"),  # two frontals x one lateral
        (["patient00001", "study2", "view2_frontal.jpg"], "view3_lateral.jpg"),
        (["patient00003", "study1", "view1_frontal.jpg"], "view2_lateral.jpg"),
    ]  # patient00002 has one view only: no pair


def test_train_and_valid_give_the_official_split(root):
    assert chexpert.read(root).splits == {"patient00001": "train", "patient00002": "train", "patient00003": "val"}


def test_one_table_alone_gives_no_split(tmp_path):
    tables = base_tables()
    del tables["valid.csv"]
    ds = chexpert.read(write(tmp_path, tables))
    assert ds.splits is None and len(ds.records) == 6


def test_paths_resolve_from_the_parent_or_a_renamed_release_folder(tmp_path):
    renamed = write(tmp_path, base_tables(), folder="chexpert")  # Path still starts with CheXpert-v1.0-small
    assert len(chexpert.read(renamed).records) == 8
    assert len(chexpert.read(tmp_path).records) == 8  # the tables are found one folder down


def test_looks_like(root, tmp_path):
    assert chexpert.looks_like(root) and chexpert.looks_like(root.parent)
    other = tmp_path / "other"
    other.mkdir()
    (other / "train.csv").write_text("image,label\na.png,1\n")  # a train.csv of another format
    assert not chexpert.looks_like(other)
    assert not chexpert.looks_like(tmp_path / "absent")


def test_no_tables_raises(tmp_path):
    with pytest.raises(DataError, match="no train.csv or valid.csv"):
        chexpert.read(tmp_path)


# === Bad input ===


def _set(index, column, value, table="train.csv"):
    def edit(tables):
        tables[table][index][HEADER.index(column)] = value
    return edit


def _leak(tables):
    tables["valid.csv"].append(row("valid/patient00001/study9/view1_frontal.jpg", "Frontal", "PA"))


def _duplicate(tables):
    tables["valid.csv"].append(list(tables["train.csv"][6]))


FIRST, SECOND = "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "study1/view2_lateral.jpg"
# (name, edit, missing, table, line, message part, number of images left out)
BAD = [
    ("frontal without AP/PA", _set(1, "AP/PA", ""), (), "train.csv", 2, "AP/PA ''", 1),
    ("frontal marked LL", _set(1, "AP/PA", "LL"), (), "train.csv", 2, "AP/PA 'LL'", 1),
    ("lateral marked AP", _set(2, "AP/PA", "AP"), (), "train.csv", 3, "does not fit a lateral", 1),
    ("unknown Frontal/Lateral", _set(1, "Frontal/Lateral", "Oblique"), (), "train.csv", 2, "'Oblique'", 1),
    ("unknown sex", _set(1, "Sex", "X"), (), "train.csv", 2, "Sex 'X'", 1),
    ("bad age", _set(1, "Age", "sixty"), (), "train.csv", 2, "Age 'sixty'", 1),
    ("negative age", _set(1, "Age", "-3"), (), "train.csv", 2, "Age '-3'", 1),
    ("bad label value", _set(1, "Pneumonia", "2"), (), "train.csv", 2, "column 'Pneumonia'", 1),
    ("missing image", None, (FIRST,), "train.csv", 2, "image file not found", 1),
    ("absolute path", _set(1, "Path", "/data/patient00001/study1/x.jpg"), (), "train.csv", 2, "relative", 1),
    ("path leaving the data set", _set(1, "Path", "../patient00001/study1/x.jpg"), (), "train.csv", 2,
     "relative", 1),
    ("path without patient", _set(1, "Path", f"{RELEASE}/train/p1/study1/x.jpg"), (), "train.csv", 2,
     "no patientN/studyN", 1),
    ("repeated path", _duplicate, (), "valid.csv", 4, "repeats train.csv line 7", 0),
    ("subject in train and valid", _leak, (), "train.csv and", None, "more than one split", 6),
]


def _build(tmp_path, edit, missing):
    tables = base_tables()
    if edit is not None:
        edit(tables)
    return write(tmp_path, tables, missing=missing)


@pytest.mark.parametrize("name, edit, missing, table, line, part, left_out", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises_naming_file_and_line(tmp_path, name, edit, missing, table, line, part, left_out):
    root = _build(tmp_path, edit, missing)
    with pytest.raises(DataError) as info:
        chexpert.read(root)
    message = str(info.value)
    assert message.startswith(str(root / table)) and part in message
    if line is not None:
        assert f"line {line}" in message


@pytest.mark.parametrize("name, edit, missing, table, line, part, left_out", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_skipped_and_counted(tmp_path, name, edit, missing, table, line, part, left_out):
    ds = chexpert.read(_build(tmp_path, edit, missing), on_error="skip")
    total = 8 + (1 if name == "subject in train and valid" else 0)
    assert len(ds.records) == total - left_out
    assert len(ds.skipped) == 1 and part in ds.skipped[0][1]


# === Shared: label collapsing (paper 000 §2) ===


@pytest.mark.parametrize("value, expected", [("1.0", 1.0), ("1", 1.0), (" 1.0 ", 1.0), ("0.0", 0.0), ("0", 0.0),
                                             ("-1.0", 0.0), ("-1", 0.0), ("", 0.0), ("  ", 0.0)])
def test_collapse_label_known_values(value, expected):
    assert collapse_label(value, "labels.csv", 7, ErrorPolicy()) == expected


@pytest.mark.parametrize("value", ["2", "0.5", "-2.0", "yes", "nan", "inf", "1.0.0"])
def test_collapse_label_other_values_are_problems(value):
    with pytest.raises(DataError, match=rf"labels\.csv: line 7, column 'Edema': label value '{value}'"):
        collapse_label(value, "labels.csv", 7, ErrorPolicy(), column="Edema")
    policy = ErrorPolicy("skip")
    assert collapse_label(value, "labels.csv", 7, policy) is None
    assert policy.skipped == [("labels.csv", f"line 7: label value '{value}' is not one of 1.0, 0.0, -1.0 or blank")]


# === Shared: CSV tables ===


def test_read_csv_strips_bom_and_spaces_and_tolerates_a_trailing_empty_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("\ufeffa, b ,\n 1 ,2\n\n3,4,\n".encode())
    rows = list(read_csv(path, ("a", "b"), ErrorPolicy()))
    assert rows == [(2, {"a": "1", "b": "2"}), (4, {"a": "3", "b": "4"})]


def test_read_csv_reports_rows_with_extra_fields(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(DataError, match=r"t\.csv: line 3: 3 fields, the header has 2"):
        list(read_csv(path, ("a", "b"), ErrorPolicy()))
    policy = ErrorPolicy("skip")
    assert list(read_csv(path, ("a", "b"), policy)) == [(2, {"a": "1", "b": "2"})] and len(policy.skipped) == 1


@pytest.mark.parametrize("content, match", [("", "empty table"), ("a,a\n1,2\n", "duplicate columns"),
                                            ("a\n1\n", r"missing columns \['b'\]")])
def test_read_csv_header_problems_always_raise(tmp_path, content, match):
    path = tmp_path / "t.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        list(read_csv(path, ("a", "b"), ErrorPolicy("skip")))


def test_read_csv_undecodable_file_raises(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b\n\xff\xfe,1\n")
    with pytest.raises(DataError, match=r"t\.csv: unreadable CSV"):
        list(read_csv(path, ("a", "b"), ErrorPolicy("skip")))
