"""Study pairing (paper 000 §2), subject splits and the input pipeline."""

import numpy as np
import pytest

from kmedssl.data.pairing import study_pairs
from kmedssl.data.pipeline import ViewDataset
from kmedssl.data.records import ImageRecord
from kmedssl.data.splits import subject_split

pytestmark = pytest.mark.backend_free


def record(subject, study, image, view):
    return ImageRecord(f"{subject}-{study}-{image}", subject, study, view, "XR", "chest", (0.0,))


def test_every_frontal_lateral_combination_once():
    records = [
        record("p1", "s1", "a", "PA"), record("p1", "s1", "b", "AP"), record("p1", "s1", "c", "LATERAL"),
        record("p1", "s1", "d", "LL"),                                   # 2 frontals x 2 laterals = 4 pairs
        record("p1", "s2", "e", "PA"),                                   # frontal only: no pair
        record("p2", "s3", "f", "LL"),                                   # lateral only: no pair
        record("p3", "s4", "g", "AP"), record("p3", "s4", "h", "LATERAL"),  # 1 pair
        record("p3", "s5", "i", "AXIAL"),                                # not a radiograph view
    ]
    pairs = study_pairs(records)
    ids = sorted((f.image_id, l.image_id) for f, l in pairs)
    assert ids == sorted([
        ("p1-s1-a", "p1-s1-c"), ("p1-s1-a", "p1-s1-d"), ("p1-s1-b", "p1-s1-c"), ("p1-s1-b", "p1-s1-d"),
        ("p3-s4-g", "p3-s4-h"),
    ])
    assert len(set(ids)) == len(ids)
    assert all(f.study_id == l.study_id and f.is_frontal and l.is_lateral for f, l in pairs)


def test_same_study_id_in_two_subjects_is_not_paired_across_them():
    pairs = study_pairs([record("p1", "s1", "a", "PA"), record("p2", "s1", "b", "LATERAL")])
    assert pairs == []


def test_subject_split_has_no_leakage_and_is_seeded():
    records = [record(f"p{i}", f"s{j}", "x", "PA") for i in range(50) for j in range(3)]
    splits = subject_split(records, seed=1)
    subjects = {name: {r.subject_id for r in rs} for name, rs in splits.items()}
    assert not subjects["train"] & subjects["val"] and not subjects["train"] & subjects["test"]
    assert not subjects["val"] & subjects["test"]
    assert [len(subjects[n]) for n in ("train", "val", "test")] == [40, 5, 5]
    assert sum(len(rs) for rs in splits.values()) == len(records)
    assert subject_split(records, seed=1) == splits
    assert subject_split(records, seed=2)["test"] != splits["test"]


def test_subject_split_rejects_bad_fractions():
    with pytest.raises(ValueError, match="fractions"):
        subject_split([], fractions=(0.5, 0.5, 0.5))


def make_dataset(**kwargs):
    samples = list(range(10))
    load = lambda i: {"x": np.full((2,), i, "float32"), "y": np.asarray(i % 2, "float32")}  # noqa: E731
    return ViewDataset(samples, load, batch_size=4, **kwargs)


def test_pipeline_batches_are_reproducible_and_reshuffled_per_epoch():
    a, b = make_dataset(seed=3), make_dataset(seed=3)
    assert len(a) == 2  # the incomplete last batch is dropped
    first = [a[i]["x"][:, 0].tolist() for i in range(len(a))]
    assert first == [b[i]["x"][:, 0].tolist() for i in range(len(b))]
    a.on_epoch_end()
    second = [a[i]["x"][:, 0].tolist() for i in range(len(a))]
    assert second != first
    flat = sum(first, [])
    assert len(set(flat)) == len(flat)


def test_pipeline_target_and_views():
    dataset = make_dataset(target="y", shuffle=False,
                           views=lambda arrays, rng: {**arrays, "noise": rng.random(3).astype("float32")})
    x, y = dataset[0]
    assert x["x"].shape == (4, 2) and y.tolist() == [0.0, 1.0, 0.0, 1.0] and x["noise"].shape == (4, 3)
    np.testing.assert_array_equal(dataset[0][0]["noise"], x["noise"])


def test_pipeline_rejects_batch_larger_than_data():
    with pytest.raises(ValueError, match="batch_size"):
        ViewDataset(list(range(3)), lambda i: {"x": np.zeros(1)}, batch_size=4)
