"""MedMNIST .npz reader on small generated files: records, official split, labels, loader, bad input."""

import pickle

import numpy as np
import pytest

from kmedssl.data.errors import DataError
from kmedssl.data.formats import medmnist

pytestmark = pytest.mark.backend_free

SIZES = {"train": 5, "val": 2, "test": 3}


def _arrays(rng, labels_width=1, classes=3, rgb=False):
    arrays = {}
    for split, n in SIZES.items():
        shape = (n, 6, 7, 3) if rgb else (n, 6, 7)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape).astype(np.uint8)
        high = 2 if labels_width > 1 else classes
        arrays[f"{split}_labels"] = rng.integers(0, high, (n, labels_width)).astype(np.uint8)
    return arrays


def _write(path, arrays):
    np.savez_compressed(path, **arrays)
    return path


def test_multi_class_records_split_and_loader(tmp_path, rng):
    arrays = _arrays(rng)
    arrays["train_labels"][0, 0] = 2  # make sure class 2 exists
    file = _write(tmp_path / "toymnist.npz", arrays)
    dataset = medmnist.read(file)
    assert dataset.format == "medmnist" and dataset.skipped == []
    assert dataset.label_names == ("label_0", "label_1", "label_2")
    assert [r.image_id for r in dataset.records] == [f"{s}/{i}" for s, n in SIZES.items() for i in range(n)]
    assert dataset.splits == {r.image_id: r.image_id.split("/")[0] for r in dataset.records}
    for record in dataset.records:
        split, index = record.image_id.split("/")
        assert record.subject_id == record.study_id == record.image_id
        assert record.path == str(file)
        assert (record.view, record.modality, record.anatomy) == ("", "", "")
        assert record.labels == tuple(float(k == arrays[f"{split}_labels"][int(index), 0]) for k in range(3))
        image = dataset.loader(record)
        assert image.dtype == np.float32 and image.shape == (6, 7)
        np.testing.assert_allclose(image, arrays[f"{split}_images"][int(index)] / 255.0, rtol=1e-6)


def test_rgb_images_become_luma(tmp_path, rng):
    arrays = _arrays(rng, rgb=True)
    dataset = medmnist.read(_write(tmp_path / "toymnist.npz", arrays))
    record = dataset.records[SIZES["train"] + 1]  # val/1
    rgb = arrays["val_images"][1].astype(np.float64) / 255.0
    oracle = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    np.testing.assert_allclose(dataset.loader(record), oracle, atol=1e-6)


@pytest.mark.parametrize("name", ["chestmnist.npz", "chestmnist_64.npz"])
def test_chestmnist_names_and_multi_hot_labels(tmp_path, rng, name):
    arrays = _arrays(rng, labels_width=14)
    dataset = medmnist.read(_write(tmp_path / name, arrays))
    assert dataset.label_names[:3] == ("atelectasis", "cardiomegaly", "effusion")
    assert dataset.label_names[-1] == "hernia" and len(dataset.label_names) == 14
    record = dataset.records[-1]  # test/2
    assert record.labels == tuple(float(v) for v in arrays["test_labels"][2])
    assert (record.modality, record.anatomy) == ("XR", "chest")


def test_unknown_multi_label_file_gets_generic_names(tmp_path, rng):
    dataset = medmnist.read(_write(tmp_path / "toymnist.npz", _arrays(rng, labels_width=4)))
    assert dataset.label_names == ("label_0", "label_1", "label_2", "label_3")


def test_folder_with_one_npz_and_looks_like(tmp_path, rng):
    file = _write(tmp_path / "toymnist.npz", _arrays(rng))
    assert medmnist.looks_like(file) and medmnist.looks_like(tmp_path)
    assert [r.image_id for r in medmnist.read(tmp_path).records][:2] == ["train/0", "train/1"]
    _write(tmp_path / "other.npz", {"x": np.zeros(3)})
    assert not medmnist.looks_like(tmp_path) and not medmnist.looks_like(tmp_path / "other.npz")
    with pytest.raises(DataError, match="exactly one .npz"):
        medmnist.read(tmp_path)
    (tmp_path / "x.png").write_bytes(b"png")
    assert not medmnist.looks_like(tmp_path / "x.png")


def _broken(rng, key, value):
    arrays = _arrays(rng)
    if value is None:
        del arrays[key]
    else:
        arrays[key] = value
    return arrays


@pytest.mark.parametrize("key, value, message", [
    ("val_labels", None, "missing array 'val_labels'"),
    ("test_images", None, "missing array 'test_images'"),
    ("train_images", np.zeros((5, 6), np.uint8), "'train_images' has shape"),
    ("train_images", np.zeros((5, 4, 4, 4), np.uint8), "'train_images' has shape.*3-D"),
    ("val_images", np.zeros((2, 6, 7), np.float32), "'val_images' has dtype float32"),
    ("test_labels", np.zeros((3,), np.uint8), "'test_labels' has shape"),
    ("test_labels", np.zeros((4, 1), np.uint8), "'test_labels' has 4 rows but test_images has 3"),
    ("val_labels", np.zeros((2, 1), np.float32), "'val_labels' has dtype float32"),
    ("val_labels", np.zeros((2, 2), np.uint8), "different widths"),
])
def test_wrong_keys_and_shapes_raise_naming_file_and_key(tmp_path, rng, key, value, message):
    file = _write(tmp_path / "toymnist.npz", _broken(rng, key, value))
    for on_error in ("raise", "skip"):
        with pytest.raises(DataError, match=f"toymnist.npz: .*{message}"):
            medmnist.read(file, on_error=on_error)


def test_chestmnist_with_wrong_label_count_raises(tmp_path, rng):
    with pytest.raises(DataError, match="chestmnist.npz: the file name says chestmnist"):
        medmnist.read(_write(tmp_path / "chestmnist.npz", _arrays(rng, labels_width=13)))


def test_not_an_npz_and_pickled_arrays_raise(tmp_path, rng):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip archive")
    with pytest.raises(DataError, match="garbage.npz: not a readable .npz"):
        medmnist.read(garbage)
    objects = _arrays(rng)
    objects["train_labels"] = np.array([[object()]] * 5, dtype=object)
    with pytest.raises(DataError, match="toymnist.npz: cannot load the labels"):
        medmnist.read(_write(tmp_path / "toymnist.npz", objects))
    np.save(tmp_path / "x.npy", np.zeros(3))
    with pytest.raises(DataError, match="x.npy: expected a MedMNIST .npz"):
        medmnist.read(tmp_path / "x.npy")
    with pytest.raises(DataError, match="missing.npz: no such file"):
        medmnist.read(tmp_path / "missing.npz")


def test_bad_label_rows_raise_or_are_skipped_and_counted(tmp_path, rng):
    arrays = _arrays(rng, labels_width=4)
    arrays["train_labels"][3] = (0, 2, 1, 0)
    arrays["test_labels"][0] = (1, 1, 1, 255)
    file = _write(tmp_path / "toymnist.npz", arrays)
    with pytest.raises(DataError, match=r"toymnist.npz: train_labels row 3: label \[0, 2, 1, 0\] is not 0 or 1"):
        medmnist.read(file)
    dataset = medmnist.read(file, on_error="skip")
    assert [message.split(":")[0] for _, message in dataset.skipped] == ["train_labels row 3", "test_labels row 0"]
    ids = [r.image_id for r in dataset.records]
    assert "train/3" not in ids and "test/0" not in ids and len(ids) == 8
    record = next(r for r in dataset.records if r.image_id == "train/4")
    np.testing.assert_allclose(dataset.loader(record), arrays["train_images"][4] / 255.0, rtol=1e-6)


def test_negative_class_is_a_problem(tmp_path, rng):
    arrays = _arrays(rng)
    arrays["val_labels"] = np.array([[1], [-1]], np.int64)
    dataset = medmnist.read(_write(tmp_path / "toymnist.npz", arrays), on_error="skip")
    assert [r for r in dataset.records if r.image_id == "val/1"] == []
    assert dataset.skipped[0][1].startswith("val_labels row 1: label [-1] is not a class index")


def test_loader_pickles_without_its_arrays_and_rejects_foreign_records(tmp_path, rng):
    dataset = medmnist.read(_write(tmp_path / "toymnist.npz", _arrays(rng, rgb=True)))
    record = dataset.records[0]
    before = dataset.loader(record)
    copy = pickle.loads(pickle.dumps(dataset.loader))
    assert copy.__dict__["_arrays"] == {}
    np.testing.assert_array_equal(copy(record), before)
    with pytest.raises(DataError, match="is not an image of it"):
        dataset.loader(type(record)(image_id="train/0", subject_id="s", study_id="s", view="", modality="",
                                    anatomy="", path=str(tmp_path / "other.npz")))
