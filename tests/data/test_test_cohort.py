"""The phantom test cohort (SPEC §5): its own subjects, disjoint from every training cohort, rendered once
and reused from a visible, deletable disk cache (kmedssl.data.test_cohort)."""

import hashlib
import pathlib

import numpy as np
import pytest

from kmedssl.data import phantom
from kmedssl.data import test_cohort as tc
from kmedssl.data.sources import PhantomSource

pytestmark = pytest.mark.backend_free

SIZE = 50  # studies
SMALL = 8  # studies, for the tests that render several times


@pytest.fixture(scope="module")
def reference():
    """The 50-study test cohort rendered in memory (no disk cache): the ground truth of these tests."""
    source = tc.PhantomTestSource(size=SIZE, workers=1, cache=False)
    return source, np.array(source.images(64))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "kmedssl-cache"
    monkeypatch.setenv(tc.CACHE_ENV, str(folder))
    return folder


def digests(images):
    return {hashlib.sha256(image.tobytes()).hexdigest() for image in images}


def test_the_cohort_has_size_studies_all_of_them_test_records(reference):
    source, images = reference
    assert len({r.study_id for r in source.records}) == SIZE == source.n_studies
    assert source.splits is None and source.label_names == phantom.CHEST_LABELS
    assert images.shape == (len(source.records), 64, 64) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    for record in source.records:
        assert record.subject_id.startswith("test0-") and record.study_id.startswith("test0-")
        assert record.image_id.startswith("test0-") and len(record.labels) == len(phantom.CHEST_LABELS)
    # A larger test cohort starts with the same studies (the cohort is a prefix of itself).
    larger = tc.PhantomTestSource(size=SIZE + 20, cache=False)
    assert larger.records[:len(source.records)] == source.records
    assert source.phantom_seed == tc.TEST_NAMESPACE * 2**32 + tc.TEST_COHORT_SEED


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_disjoint_from_training_cohorts_by_id(reference, seed):
    test = reference[0].records
    train = PhantomSource(kind="chest", size=500, seed=seed).records  # the recipes' default cohort size
    for field in ("subject_id", "study_id", "image_id"):
        assert {getattr(r, field) for r in test}.isdisjoint(getattr(r, field) for r in train)


def test_disjoint_from_training_cohorts_by_content(reference):
    source, images = reference
    test_cohort = source.cohort
    n_test = len({r.subject_id for r in source.records})

    def anatomy(cohort, i):
        a = cohort._anatomy(i)
        return (a.s, a.fat, a.bone, a.heart, a.heart_axis, a.dome, a.aorta, a.lung_air, a.breast)

    test_anatomies = {anatomy(test_cohort, i) for i in range(n_test)}
    assert len(test_anatomies) == n_test
    test_images = digests(images)
    assert len(test_images) == len(images)  # no two identical test images either
    for seed in range(4):
        train = phantom.ChestCohort(num_subjects=n_test, seed=seed)
        assert test_anatomies.isdisjoint(anatomy(train, i) for i in range(n_test))
        train_images = [train.render(r, image_size=64) for r in train.records[:12]]
        assert test_images.isdisjoint(digests(train_images))
        # The same positions in the cohorts (subject 0, its first image) are different patients.
        assert not np.array_equal(train_images[0], images[0])


def test_another_test_seed_is_another_cohort(reference):
    other = tc.PhantomTestSource(size=SIZE, seed=1, cache=False)
    assert {r.subject_id for r in other.records}.isdisjoint(r.subject_id for r in reference[0].records)
    assert not np.array_equal(other.cohort.render(other.cohort.records[0], image_size=64), reference[1][0])


def test_rendering_is_deterministic_and_order_free(reference):
    source, images = reference
    fresh = tc.PhantomTestSource(size=SMALL, cache=False)
    n = len(fresh.records)
    np.testing.assert_array_equal(fresh.load_image(fresh.records[-1], 64), images[n - 1])  # asked first
    assert fresh.images(64).tobytes() == images[:n].tobytes()


def test_the_cache_is_written_once_and_read_back_byte_for_byte(reference, cache, monkeypatch):
    first = tc.phantom_test_cohort(size=SMALL, workers=1)
    images = reference[1][:len(first.records)]
    path = first.cache_path(64)
    assert path.parent == cache == tc.cache_dir() and path.exists()
    assert path.name.startswith("phantom-test-chest-t0-n8-px64-") and tc.phantom_fingerprint() in path.name
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temporary file left behind
    assert first.images(64).tobytes() == images.tobytes()

    def no_render(*args, **kwargs):
        raise AssertionError("rendered although the cache holds the images")

    monkeypatch.setattr(tc, "_render_rows", no_render)
    second = tc.phantom_test_cohort(size=SMALL)
    assert second.images(64).tobytes() == images.tobytes()
    assert not second.images(64).flags.writeable
    image = second.load_image(second.records[3], 64)
    image += 1.0  # a copy: the cached images are not changed
    assert second.images(64)[3].tobytes() == images[3].tobytes()
    with np.load(path, allow_pickle=False) as data:
        assert data["image_ids"].tolist() == [r.image_id for r in second.records]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other_cohort", "pickled"])
def test_a_damaged_cache_file_is_rendered_again_with_a_warning(reference, cache, damage):
    path = tc.phantom_test_cohort(size=SMALL, workers=1).cache_path(64)
    images = reference[1][:len(tc.PhantomTestSource(size=SMALL).records)]  # a prefix of the larger cohort
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file")
    elif damage == "other_cohort":
        with np.load(path) as data:
            content = dict(data)
        content["image_ids"] = content["image_ids"][::-1]
        with open(path, "wb") as handle:
            np.savez(handle, **content)
    else:  # an object array needs pickle, which is never allowed
        with open(path, "wb") as handle:
            np.savez(handle, images=np.array([object()], dtype=object))
    with pytest.warns(RuntimeWarning, match=r"unreadable test-cohort cache .*rendering it again") as record:
        source = tc.phantom_test_cohort(size=SMALL, workers=1)
    ours = [str(w.message) for w in record if "kmedssl" in str(w.message)]
    assert len(ours) == 1 and "\n" not in ours[0]
    assert source.images(64).tobytes() == images.tobytes()
    with np.load(path, allow_pickle=False) as data:  # rewritten, whole
        assert data["images"].tobytes() == images.tobytes()


def test_an_unwritable_cache_warns_and_keeps_the_images_in_memory(reference, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(tc.CACHE_ENV, str(blocker / "cache"))
    with pytest.warns(RuntimeWarning, match="could not write the test-cohort cache"):
        source = tc.phantom_test_cohort(size=SMALL, workers=1)
    assert source.images(64).tobytes() == reference[1][:len(source.records)].tobytes()


def test_the_cache_folder_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(tc.CACHE_ENV, str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tc.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv(tc.CACHE_ENV)
    assert tc.cache_dir() == tmp_path / "xdg" / "kmedssl"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the XDG spec: ignore a relative path
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tc.cache_dir() == tmp_path / "home" / ".cache" / "kmedssl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert tc.cache_dir() == pathlib.Path(tmp_path / "home" / ".cache" / "kmedssl")
    source = tc.PhantomTestSource(size=3, cache=True)
    assert source.cache_path(32).parent == tc.cache_dir() and not tc.cache_dir().exists()  # nothing written yet


def test_worker_processes_render_the_same_bytes(reference, monkeypatch):
    monkeypatch.setattr(tc, "_PARALLEL_MIN_IMAGES", 0)
    source = tc.PhantomTestSource(size=SIZE, workers=2, cache=False)
    assert source.images(64).tobytes() == reference[1].tobytes()


def test_invalid_arguments_and_foreign_records(reference):
    with pytest.raises(ValueError, match="size"):
        tc.PhantomTestSource(size=0)
    with pytest.raises(ValueError, match="seed"):
        tc.PhantomTestSource(seed=2**32)
    with pytest.raises(ValueError, match="test cohort"):
        reference[0].load_image(PhantomSource(size=3, seed=0).records[0], 64)
