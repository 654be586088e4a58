"""The multi-modality phantom written in the RadImageNet layout and read back by the real reader."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from kmedssl.data.formats import folder, medmnist, mimic_cxr, radimagenet
from kmedssl.data.phantom import MultiModalCohort, metadata_multi_hot
from kmedssl.data.phantom.radimagenet_writer import write_radimagenet

pytestmark = pytest.mark.backend_free

NUM, SIZE, SEED = 24, 16, 3


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = write_radimagenet(tmp_path_factory.mktemp("rin") / "phantom", num_images=NUM, image_size=SIZE, seed=SEED)
    return out, MultiModalCohort(num_images=NUM, seed=SEED)


def test_layout_and_pixels(written):
    out, cohort = written
    assert isinstance(out, pathlib.Path)
    for record in cohort.records:
        pathology = "abnormal" if record.labels == (1.0,) else "normal"
        path = out / record.modality / record.anatomy / pathology / f"{record.image_id}.png"
        with Image.open(path) as image:
            assert (image.mode, image.size) == ("L", (SIZE, SIZE))
            pixels = np.asarray(image)
        np.testing.assert_array_equal(pixels, np.round(cohort.render(record, SIZE) * 255.0).astype(np.uint8))
    assert len(list(out.rglob("*.png"))) == NUM


def test_read_back_gives_the_cohort_metadata(written):
    out, cohort = written
    assert radimagenet.looks_like(out)
    assert not any(reader.looks_like(out) for reader in (mimic_cxr, medmnist, folder))
    dataset = radimagenet.read(out)
    assert dataset.skipped == [] and len(dataset.records) == NUM
    by_id = {r.image_id: r for r in cohort.records}
    originals = [by_id[pathlib.PurePosixPath(r.image_id).stem] for r in dataset.records]
    assert [(r.modality, r.anatomy) for r in dataset.records] == [(r.modality, r.anatomy) for r in originals]
    np.testing.assert_array_equal(metadata_multi_hot(dataset.records), metadata_multi_hot(originals))
    for record, original in zip(dataset.records, originals):
        name = dataset.label_names[record.labels.index(1.0)]
        assert name.split("/")[2] == ("abnormal" if original.labels == (1.0,) else "normal")
    mini = radimagenet.mini_rin(dataset, per_class=1, seed=0)
    assert len(mini.records) == len(dataset.label_names)


def test_deterministic_and_refuses_a_non_empty_folder(written, tmp_path):
    out, _ = written
    again = write_radimagenet(tmp_path / "again", num_images=NUM, image_size=SIZE, seed=SEED)
    first = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    assert first == sorted(p.relative_to(again) for p in again.rglob("*.png"))
    assert all((out / p).read_bytes() == (again / p).read_bytes() for p in first)
    with pytest.raises(FileExistsError, match="not an empty folder"):
        write_radimagenet(again, num_images=2, image_size=SIZE)
    for bad in (4, 16.0, True):
        with pytest.raises(ValueError, match="image_size"):
            write_radimagenet(tmp_path / "bad", num_images=2, image_size=bad)
    assert not (tmp_path / "bad").exists()


def test_progress_is_told_the_total_then_each_image(tmp_path):
    calls = []
    write_radimagenet(tmp_path / "rin", num_images=5, image_size=16, seed=0, progress=calls.append)
    assert calls == [5, 1, 1, 1, 1, 1]
