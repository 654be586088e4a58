"""RadImageNet folder tree reader and the miniRIN subset (paper 001 §4.1) on small generated trees."""

import collections
import dataclasses
import random

import numpy as np
import pytest
from PIL import Image

from kmedssl.data.errors import DataError
from kmedssl.data.formats import radimagenet
from kmedssl.data.images import read_image
from kmedssl.data.phantom import metadata_multi_hot

pytestmark = pytest.mark.backend_free


def _png(path, value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6), value, np.uint8)).save(path)
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "radiology_ai"
    for name in ("CT/lung/nodule/a.png", "CT/lung/nodule/b.PNG", "CT/lung/normal/c.png", "mri/Knee/acl/d.jpg",
                 "US/thyroid/benign/e.png"):
        _png(root / name)
    (root / "CT/lung/nodule/notes.txt").write_text("not an image")
    (root / "CT/lung/nodule/.DS_Store").write_bytes(b"\0")
    (root / "CT/lung/nodule/._a.png").write_bytes(b"\0\5")  # macOS AppleDouble: hidden, ignored
    (root / "RadiologyAI_train.csv").write_text("filename,label\n")
    return root


def test_records_modality_anatomy_and_one_hot_classes(tree):
    dataset = radimagenet.read(tree)
    assert dataset.format == "radimagenet"
    assert dataset.label_names == ("CT/lung/nodule", "CT/lung/normal", "MR/knee/acl", "US/thyroid/benign")
    got = {r.image_id: r for r in dataset.records}
    assert sorted(got) == ["CT/lung/nodule/a.png", "CT/lung/nodule/b.PNG", "CT/lung/normal/c.png",
                           "US/thyroid/benign/e.png", "mri/Knee/acl/d.jpg"]
    expected_class = {"a.png": 0, "b.PNG": 0, "c.png": 1, "d.jpg": 2, "e.png": 3}
    for image_id, record in got.items():
        one_hot = [0.0] * 4
        one_hot[expected_class[image_id.split("/")[-1]]] = 1.0
        assert record.labels == tuple(one_hot)
        assert record.subject_id == record.study_id == image_id
        assert record.view == ""
        assert record.path == str(tree / image_id)
    assert (got["mri/Knee/acl/d.jpg"].modality, got["mri/Knee/acl/d.jpg"].anatomy) == ("MR", "knee")
    assert (got["US/thyroid/benign/e.png"].modality, got["US/thyroid/benign/e.png"].anatomy) == ("US", "thyroid")
    assert dataset.splits is None and dataset.skipped == [] and dataset.loader is None


def test_metadata_multi_hot_is_modality_then_anatomy_one_hot(tmp_path):
    names = ["XR/chest/normal/0.png", "CT/brain/tumour/1.png", "US/abdomen/cyst/2.png", "MR/knee/acl/3.png"]
    for name in names:
        _png(tmp_path / name)
    records = {r.image_id: r for r in radimagenet.read(tmp_path).records}
    modalities, anatomies = ("XR", "CT", "MR", "US"), ("chest", "abdomen", "knee", "brain")
    for name in names:
        modality, anatomy = name.split("/")[:2]
        oracle = np.zeros(8, np.float32)
        oracle[modalities.index(modality)] = 1.0
        oracle[4 + anatomies.index(anatomy)] = 1.0
        np.testing.assert_array_equal(metadata_multi_hot([records[name]])[0], oracle)


def test_looks_like(tree, tmp_path):
    assert radimagenet.looks_like(tree)
    flat = tmp_path / "classes"
    _png(flat / "CT" / "x.png")  # a class-per-folder tree: images only one level down
    assert not radimagenet.looks_like(flat)
    other = tmp_path / "other"
    _png(other / "CT/lung/nodule/x.png")
    _png(other / "images/lung/nodule/y.png")  # a top-level folder that is not a modality
    assert not radimagenet.looks_like(other)
    assert not radimagenet.looks_like(tree / "CT/lung/nodule/a.png")
    assert not radimagenet.looks_like(tmp_path / "missing")


def test_empty_image_raises_naming_the_file_or_is_skipped(tree):
    empty = tree / "CT/lung/normal/empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.png.*0 bytes"):
        radimagenet.read(tree)
    dataset = radimagenet.read(tree, on_error="skip")
    assert len(dataset.records) == 5
    assert dataset.skipped == [(str(empty), "empty image file (0 bytes)")]
    assert "CT/lung/normal" in dataset.label_names


@pytest.mark.parametrize("name, depth", [("CT/lung/stray.png", 3), ("CT/lung/nodule/extra/deep.png", 5),
                                         ("CT/top.png", 2)])
def test_image_at_the_wrong_depth_raises_or_is_skipped(tree, name, depth):
    _png(tree / name)
    with pytest.raises(DataError, match=rf"{name.split('/')[-1]}: image at depth {depth}"):
        radimagenet.read(tree)
    dataset = radimagenet.read(tree, on_error="skip")
    assert len(dataset.records) == 5 and len(dataset.skipped) == 1
    assert dataset.skipped[0][0] == str(tree / name)


def test_corrupt_png_is_found_when_loaded(tree):
    """The reader checks existence and size only; decoding errors surface in read_image at load time."""
    bad = tree / "CT/lung/normal/truncated.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    record = next(r for r in radimagenet.read(tree).records if r.path == str(bad))
    with pytest.raises(DataError, match="truncated.png"):
        read_image(record.path)


def test_not_a_tree_raises(tmp_path):
    with pytest.raises(DataError, match="expected a folder"):
        radimagenet.read(tmp_path / "missing")
    (tmp_path / "CT/lung/nodule").mkdir(parents=True)
    with pytest.raises(DataError, match="no image files"):
        radimagenet.read(tmp_path)


# === miniRIN ===


@pytest.fixture
def big(tmp_path):
    counts = {"CT/lung/nodule": 12, "CT/lung/normal": 3, "MR/knee/acl": 7, "US/thyroid/benign": 1}
    for name, count in counts.items():
        for k in range(count):
            _png(tmp_path / name / f"{k:03d}.png")
    return radimagenet.read(tmp_path), counts


def _per_class(dataset):
    return collections.Counter(dataset.label_names[r.labels.index(1.0)] for r in dataset.records)


def test_mini_rin_caps_every_class(big):
    dataset, counts = big
    mini = radimagenet.mini_rin(dataset, per_class=5, seed=0)
    assert dict(_per_class(mini)) == {name: min(count, 5) for name, count in counts.items()}
    assert mini.label_names == dataset.label_names
    positions = [dataset.records.index(r) for r in mini.records]
    assert positions == sorted(positions)  # original order kept
    assert len(radimagenet.mini_rin(dataset, per_class=100).records) == len(dataset.records)


def test_mini_rin_is_seeded_nested_and_order_free(big):
    dataset, _ = big
    ids = lambda d: [r.image_id for r in d.records]  # noqa: E731
    first = radimagenet.mini_rin(dataset, per_class=5, seed=3)
    assert ids(first) == ids(radimagenet.mini_rin(dataset, per_class=5, seed=3))
    assert ids(first) != ids(radimagenet.mini_rin(dataset, per_class=5, seed=4))
    assert set(ids(radimagenet.mini_rin(dataset, per_class=2, seed=3))) < set(ids(first))
    shuffled = list(dataset.records)
    random.Random(0).shuffle(shuffled)
    again = radimagenet.mini_rin(dataclasses.replace(dataset, records=shuffled), per_class=5, seed=3)
    assert set(ids(again)) == set(ids(first))


def test_mini_rin_keeps_splits_of_kept_subjects(big):
    dataset, _ = big
    splits = {r.subject_id: "train" if k % 2 else "test" for k, r in enumerate(dataset.records)}
    mini = radimagenet.mini_rin(dataclasses.replace(dataset, splits=splits), per_class=2, seed=0)
    assert mini.splits == {r.subject_id: splits[r.subject_id] for r in mini.records}


def test_mini_rin_rejects_bad_arguments(big):
    dataset, _ = big
    for per_class in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="per_class"):
            radimagenet.mini_rin(dataset, per_class=per_class)
    with pytest.raises(ValueError, match="seed"):
        radimagenet.mini_rin(dataset, seed=-1)
    multi_hot = dataclasses.replace(dataset.records[0], labels=(1.0, 1.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="one-hot"):
        radimagenet.mini_rin(dataclasses.replace(dataset, records=[multi_hot]))
