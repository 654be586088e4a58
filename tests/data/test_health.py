"""Health checks: every defect planted in a generated data set is found, by category and file; clean is ok."""

import collections
import csv
import gzip
import io
import json
import pathlib
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from kmedssl.data.errors import DataError
from kmedssl.data.formats import read_dataset
from kmedssl.data.formats.common import Dataset
from kmedssl.data.formats.mimic_cxr import CHEXPERT, METADATA, SPLIT
from kmedssl.data.health import CATEGORIES, check_dataset, health_report
from kmedssl.data.phantom.writer import write_mimic_cxr
from kmedssl.data.records import ImageRecord

pytestmark = pytest.mark.backend_free

IMAGE_SIZE = 48


# === Building a corrupt MIMIC-CXR-JPG folder (shared with tests/test_cli_data.py) ===


def write_clean_mimic(out_dir):
    """A clean 16-subject phantom in the MIMIC-CXR-JPG layout (48 px JPEGs)."""
    return write_mimic_cxr(out_dir, num_subjects=16, image_size=IMAGE_SIZE, seed=0)


def read_table(path):
    with gzip.open(path, "rt", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def write_table(path, fieldnames, rows):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        handle.write(buffer.getvalue())


def save_image(path, array, format="PNG"):
    """Write ``array`` as an image at ``path`` whatever its suffix (a .jpg may hold PNG bytes)."""
    Image.fromarray(array).save(path, format=format)


def plant_defects(root):
    """Plant one defect per subject in a clean MIMIC phantom at ``root``.

    Returns:
        ``{defect: (category, file, text in the message or "")}`` of every planted error, plus
        ``"only frontal"``, the warning for the study whose lateral rows were removed.
    """
    root = pathlib.Path(root)
    records = read_dataset(root, "mimic-cxr").records
    by_subject = collections.defaultdict(list)
    for record in records:
        by_subject[record.subject_id].append(record)
    subjects = sorted(by_subject)
    meta_file, labels_file, split_file = (root / names[0] for names in (METADATA, CHEXPERT, SPLIT))
    meta_fields, meta_rows = read_table(meta_file)
    label_fields, label_rows = read_table(labels_file)
    split_fields, split_rows = read_table(split_file)
    first = {s: pathlib.Path(by_subject[s][0].path) for s in subjects}
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    planted = {}

    data = first[subjects[0]].read_bytes()
    first[subjects[0]].write_bytes(data[: len(data) // 2])
    planted["truncated jpeg"] = ("unreadable", str(first[subjects[0]]), "")

    first[subjects[1]].write_bytes(b"")
    planted["zero-byte file"] = ("unreadable", str(first[subjects[1]]), "0 bytes")

    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 128)])
    save_image(first[subjects[2]], rgba)
    planted["rgba png"] = ("channels", str(first[subjects[2]]), "alpha")

    save_image(first[subjects[3]], grey.astype(np.uint16) * 257)
    planted["16-bit png"] = ("bit-depth", str(first[subjects[3]]), "16-bit image among 8-bit images")

    save_image(first[subjects[4]], grey[:8, :8], format="JPEG")
    planted["8x8 image"] = ("dimensions", str(first[subjects[4]]), "8x8 px")

    shutil.copyfile(first[subjects[5]], first[subjects[6]])
    planted["duplicate under another subject"] = ("leakage", str(first[subjects[6]]), str(first[subjects[5]]))

    first[subjects[7]].unlink()
    planted["row to a missing file"] = ("missing-file", str(meta_file), "image file not found")

    dicom_id = first[subjects[8]].stem
    next(row for row in meta_rows if row["dicom_id"] == dicom_id)["ViewPosition"] = "OBLIQUE"
    planted["unknown view code"] = ("view", str(meta_file), "OBLIQUE")

    study = by_subject[subjects[9]][0].study_id
    next(row for row in label_rows if row["study_id"] == study)["Cardiomegaly"] = "2.0"
    planted["label value 2.0"] = ("label", str(labels_file), "'2.0'")

    two_view = next(r for s in subjects[10:] for r in by_subject[s] if r.is_frontal and any(
        o.study_id == r.study_id and o.is_lateral for o in by_subject[s]))
    lateral_ids = {pathlib.Path(r.path).stem for r in by_subject[two_view.subject_id]
                   if r.study_id == two_view.study_id and r.is_lateral}
    meta_rows = [row for row in meta_rows if row["dicom_id"] not in lateral_ids]
    split_rows = [row for row in split_rows if row["dicom_id"] not in lateral_ids]
    planted["only frontal"] = ("missing-view", two_view.path, f"study {two_view.study_id} has no lateral")

    leaking = next(s for s in subjects[10:] if s != two_view.subject_id)
    row = dict(next(row for row in split_rows if row["subject_id"] == leaking))
    row["split"] = "test" if row["split"] != "test" else "train"
    split_rows.append(row)
    planted["subject in two splits"] = ("leakage", str(split_file), "more than one split")

    write_table(meta_file, meta_fields, meta_rows)
    write_table(labels_file, label_fields, label_rows)
    write_table(split_file, split_fields, split_rows)
    return planted


@pytest.fixture(scope="module")
def clean_mimic(tmp_path_factory):
    return write_clean_mimic(tmp_path_factory.mktemp("health") / "clean")


@pytest.fixture
def corrupt_mimic(clean_mimic, tmp_path):
    root = shutil.copytree(clean_mimic, tmp_path / "corrupt")
    return root, plant_defects(root)


# === MIMIC-CXR-JPG ===


def test_clean_phantom_is_ok(clean_mimic):
    report = check_dataset(clean_mimic)
    assert report.format == "mimic-cxr" and report.ok and report.num_errors == 0
    assert report.num_records > 0 and report.num_skipped == 0
    assert {f.category for f in report.findings} <= {"missing-view"}  # the phantom has one-view studies


def test_every_planted_defect_is_found(corrupt_mimic):
    root, planted = corrupt_mimic
    report = check_dataset(root, format="mimic-cxr")
    assert not report.ok
    for defect, (category, file, text) in planted.items():
        matches = [f for f in report.findings if f.category == category and f.file == file and text in f.message]
        assert len(matches) == 1, (defect, [f for f in report.findings if f.file == file])
    planted_errors = sorted((c, f) for d, (c, f, _) in planted.items() if d != "only frontal")
    found_errors = sorted((f.category, f.file) for f in report.findings if f.level == "error")
    assert found_errors == planted_errors  # and nothing else
    assert report.counts["leakage"] == 2 and report.counts["unreadable"] == 2


def test_findings_never_name_a_subject(corrupt_mimic):
    root, _ = corrupt_mimic
    report = check_dataset(root, format="mimic-cxr")
    leak = next(f for f in report.findings if "more than one split" in f.message)
    assert leak.message.startswith("subject <subject> is in more than one split")
    subjects = {folder.name[1:] for folder in (root / "files").glob("p*/p*")}
    assert len(subjects) == 16
    for finding in report.findings:
        text = re.sub(re.escape(str(root)) + r"\S*", "", finding.message)  # paths hold the subject folder
        assert not any(subject in text for subject in subjects), finding


def test_report_json_and_text(corrupt_mimic):
    root, planted = corrupt_mimic
    report = check_dataset(root)
    document = json.loads(report.to_json())
    assert document["ok"] is False and list(document["counts"]) == list(CATEGORIES)
    assert document["counts"] == report.counts and len(document["findings"]) == len(report.findings)
    assert document["num_errors"] == len(planted) - 1
    assert set(document["findings"][0]) == {"file", "category", "level", "message"}
    text = report.to_text()
    assert text.splitlines()[-1] == f"Result: NOT OK ({report.num_errors} errors, {report.num_warnings} warnings)"
    assert "files/p1" in text and str(root) + "/files" not in text  # files shown relative to the root
    for category in ("unreadable", "channels", "bit-depth", "dimensions", "leakage", "missing-file", "view", "label"):
        assert f"\n{category}:\n" in text
    short = report.to_text(per_category=1)
    assert "... and 1 more (write them all with --json)" in short


# === Generic folder/CSV ===


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _folder(root, rows, extra=()):
    """A labels.csv data set of 40x40 8-bit images (distinct content) plus ``extra`` planted files."""
    rng = np.random.default_rng(1)
    for name in sorted({row.split(",")[0] for row in rows} - {name for name, _ in extra} - {"missing.png"}):
        _png(root / name, rng.integers(0, 256, (40, 40), dtype=np.uint8))
    for name, write in extra:
        write(root / name)
    (root / "labels.csv").write_text("\n".join(["path,subject,study,view,split,label_a"] + rows) + "\n")
    return root


def test_folder_defects(tmp_path):
    noise = np.random.default_rng(2).integers(0, 256, (40, 40), dtype=np.uint8)
    extra = [
        ("one_bit.png", lambda p: Image.fromarray(noise > 128).save(p)),
        ("strip.png", lambda p: _png(p, np.zeros((40, 200), np.uint8) + 7)),
        ("colour.png", lambda p: _png(p, np.dstack([noise, noise // 2, noise // 3]))),
        ("copy.png", lambda p: _png(p, noise)),
        ("orig.png", lambda p: _png(p, noise)),
        ("empty.png", lambda p: p.write_bytes(b"")),
    ]
    rows = [
        "ok.png,s1,t1,PA,train,1", "orig.png,s1,t1,LATERAL,train,0", "copy.png,s1,t2,PA,train,0",
        "one_bit.png,s2,t3,,train,0", "strip.png,s3,t4,,train,0", "colour.png,s4,t5,,val,0",
        "empty.png,s5,t6,,train,0", "missing.png,s6,t7,,train,0", "bad_view.png,s7,t8,OBLIQUE,train,0",
        "bad_label.png,s8,t9,,train,2", "leak_a.png,s9,t10,,train,0", "leak_b.png,s9,t11,,test,0",
        "bad_split.png,s10,t12,,holdout,0",
    ]
    root = _folder(tmp_path, rows, extra)
    report = check_dataset(root)
    table = str(root / "labels.csv")
    expected = {
        ("bit-depth", str(root / "one_bit.png"), "error"),
        ("dimensions", str(root / "strip.png"), "error"),
        ("channels", str(root / "colour.png"), "warning"),
        ("duplicate", str(root / "copy.png"), "warning"),  # same content as orig.png, same subject
        ("unreadable", table, "error"),       # empty.png, skipped by the reader
        ("missing-file", table, "error"),
        ("view", table, "error"),
        ("label", table, "error"),
        ("leakage", table, "error"),          # s9 in train and test
        ("split", table, "error"),            # "holdout"
        ("missing-view", str(root / "copy.png"), "warning"),  # study t2: a frontal only
    }
    assert {(f.category, f.file, f.level) for f in report.findings} == expected
    assert report.num_skipped == 6 and not report.ok
    messages = {f.category: f.message for f in report.findings}
    assert "aspect ratio above 4" in messages["dimensions"] and "1-bit" in messages["bit-depth"]
    assert "empty.png" in messages["unreadable"] and "missing.png" in messages["missing-file"]


def test_warnings_alone_keep_the_data_set_ok(tmp_path):
    noise = np.random.default_rng(3).integers(0, 256, (40, 40), dtype=np.uint8)
    extra = [("a.png", lambda p: _png(p, noise)), ("b.png", lambda p: _png(p, noise)),
             ("c.png", lambda p: _png(p, np.dstack([noise] * 3)))]
    root = _folder(tmp_path, ["a.png,s1,t1,PA,train,1", "b.png,s1,t2,PA,train,0", "c.png,s2,t3,PA,val,0"], extra)
    report = check_dataset(root, format="folder")
    assert report.ok and report.num_errors == 0
    assert report.counts["duplicate"] == 1 and report.counts["channels"] == 1
    # No study has a lateral: one data-set-wide finding, not one per study.
    assert report.counts["missing-view"] == 1 and "any of the 3 radiograph studies" in report.findings[-1].message
    assert report.to_text().endswith("Result: OK (0 errors, 3 warnings)")


def test_sixteen_bit_majority_flags_the_eight_bit_image(tmp_path):
    rng = np.random.default_rng(4)
    for k in range(3):
        Image.fromarray(rng.integers(0, 65536, (32, 32), dtype=np.uint16)).save(tmp_path / f"{k}.png")
    _png(tmp_path / "eight.png", rng.integers(0, 256, (32, 32), dtype=np.uint8))
    report = check_dataset(tmp_path, format="folder")
    assert [(f.category, pathlib.Path(f.file).name) for f in report.findings] == [("bit-depth", "eight.png")]
    assert report.findings[0].message == "8-bit image among 16-bit images (3 of 4 are 16-bit)"


# === Custom loaders (pixel hashes), arguments, unreadable paths ===


def test_custom_loader_sources_hash_decoded_pixels(tmp_path):
    arrays = {"a": np.full((30, 30), 0.5, np.float32), "b": np.full((30, 30), 0.5, np.float32),
              "c": np.zeros((30, 30), np.float32), "d": np.zeros((12, 30), np.float32)}

    def loader(record):
        if record.image_id == "bad":
            raise DataError(f"{record.path}: corrupt array")
        return arrays[record.image_id]

    shared = str(tmp_path / "images.npz")  # every record points at the same archive
    records = [ImageRecord(i, s, i, "", "CT", "lung", path=shared)
               for i, s in (("a", "p1"), ("b", "p2"), ("c", "p3"), ("d", "p4"), ("bad", "p5"))]
    dataset = Dataset("medmnist", tmp_path, records, loader=loader)
    report = health_report(dataset, workers=2)
    assert [(f.category, f.file, f.message) for f in report.findings] == [
        ("unreadable", f"{shared}[bad]", "corrupt array"),
        ("leakage", f"{shared}[b]", f"same image content as {shared}[a] under a different subject"),
        ("dimensions", f"{shared}[d]", "30x12 px: a side is shorter than 28 px"),
    ]


def test_medmnist_npz(tmp_path):
    rng = np.random.default_rng(5)
    images = {split: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for split, n in
              (("train", 6), ("val", 2), ("test", 2))}
    images["test"][1] = images["train"][4]  # the same image in train and test
    labels = {split: np.zeros((len(images[split]), 1), np.int64) for split in images}
    labels["train"][:, 0] = [0, 1, 0, 1, -1, 1]  # row 4: a negative class
    arrays = {f"{split}_{kind}": table[split] for kind, table in (("images", images), ("labels", labels))
              for split in images}
    np.savez(tmp_path / "pathmnist.npz", **arrays)
    report = check_dataset(tmp_path / "pathmnist.npz")
    file = str(tmp_path / "pathmnist.npz")
    assert report.format == "medmnist" and report.num_records == 9
    assert [(f.category, f.file) for f in report.findings] == [("label", file)]  # train/4 was left out
    labels["train"][4, 0] = 0
    np.savez(tmp_path / "pathmnist.npz", **arrays)
    report = check_dataset(tmp_path / "pathmnist.npz")
    assert [(f.category, f.file) for f in report.findings] == [("leakage", f"{file}[test/1]")]
    assert report.findings[0].message == f"same image content as {file}[train/4] under a different subject"


def test_progress_is_called_once_per_record(clean_mimic):
    dataset = read_dataset(clean_mimic, "mimic-cxr")
    calls = []
    health_report(dataset, progress=calls.append)
    assert calls == [1] * len(dataset.records)


@pytest.mark.parametrize("kwargs, message", [
    ({"min_side": 0}, "Expected min_side to be a positive integer"),
    ({"max_aspect": 0.5}, "Expected max_aspect >= 1"),
    ({"workers": 0}, "Expected workers to be a positive integer"),
])
def test_bad_arguments(clean_mimic, kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_dataset(clean_mimic, **kwargs)


def test_a_path_that_cannot_be_read_raises(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        check_dataset(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("not a data set")
    with pytest.raises(DataError, match="cannot infer the data format"):
        check_dataset(tmp_path)
