"""The chest phantom written as a generic image + mask folder (``--layout masks``) and read back."""

import csv
import pathlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kmedssl.cli.data import data
from kmedssl.data.formats import folder, read_dataset
from kmedssl.data.phantom import CHEST_LABELS, ChestCohort
from kmedssl.data.phantom.ground_truth import LANDMARKS, STRUCTURES
from kmedssl.data.phantom.masks_writer import INDEX_COLUMNS, LANDMARK_COLUMNS, write_masks
from kmedssl.data.splits import subject_split

pytestmark = pytest.mark.backend_free

NUM, SIZE, SEED = 3, 32, 5


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = write_masks(tmp_path_factory.mktemp("masks") / "phantom", num_subjects=NUM, image_size=SIZE, seed=SEED)
    return out, ChestCohort(num_subjects=NUM, seed=SEED)


def _read_png(path):
    with Image.open(path) as image:
        assert (image.mode, image.size) == ("L", (SIZE, SIZE))
        return np.asarray(image)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_images_and_masks_are_the_renders_and_the_ground_truth(written):
    out, cohort = written
    assert isinstance(out, pathlib.Path)
    for n, record in enumerate(cohort.records):
        name = f"{n:06d}.png"
        expected = np.round(cohort.render(record, SIZE) * 255.0).astype(np.uint8)
        np.testing.assert_array_equal(_read_png(out / "images" / name), expected)
        truth = cohort.ground_truth(record, SIZE)
        for structure in STRUCTURES:
            mask = _read_png(out / "masks" / structure / name)
            assert set(np.unique(mask)) <= {0, 255}
            np.testing.assert_array_equal(mask == 255, truth.masks[structure])
    assert sorted(p.name for p in (out / "masks").iterdir()) == sorted(STRUCTURES)
    assert len(list(out.rglob("*.png"))) == len(cohort.records) * (1 + len(STRUCTURES))


def test_landmarks_csv_reads_back(written):
    out, cohort = written
    header, *rows = _rows(out / "landmarks.csv")
    assert tuple(header) == LANDMARK_COLUMNS and len(rows) == len(cohort.records) * len(LANDMARKS)
    for n, record in enumerate(cohort.records):
        truth = cohort.ground_truth(record, SIZE)
        mine = rows[n * len(LANDMARKS):(n + 1) * len(LANDMARKS)]
        assert [row[0] for row in mine] == [f"images/{n:06d}.png"] * len(LANDMARKS)
        assert [row[1] for row in mine] == list(LANDMARKS)
        for (_, name, x, y, visible) in mine:
            landmark = truth.landmarks[name]
            np.testing.assert_allclose([float(x), float(y)], [landmark.x, landmark.y], atol=1e-4)
            assert visible == str(int(landmark.visible))


def test_no_cohort_identifier_is_written(written):
    out, cohort = written
    text = (out / "landmarks.csv").read_text() + (out / "index.csv").read_text()
    for record in cohort.records:
        for value in (record.subject_id, record.study_id, record.image_id):
            assert value not in text
    assert "sex" not in _rows(out / "index.csv")[0] and "age" not in _rows(out / "index.csv")[0]


def test_index_is_read_by_the_folder_reader(written):
    out, cohort = written
    assert folder.looks_like(out) and tuple(_rows(out / "index.csv")[0]) == INDEX_COLUMNS
    assert read_dataset(out).format == "masks"  # inferred: the layout wins over the generic folder format
    dataset = read_dataset(out, "folder")
    assert dataset.format == "folder" and dataset.skipped == [] and dataset.label_names == CHEST_LABELS
    assert [r.labels for r in dataset.records] == [r.labels for r in cohort.records]
    assert [r.view for r in dataset.records] == [r.view for r in cohort.records]
    # Pseudonymous subjects and studies group the same images as the cohort's ids, and keep its split.
    def groups(records, key):
        return sorted(sorted(i for i, r in enumerate(records) if key(r) == k) for k in {key(r) for r in records})
    for key in ("subject_id", "study_id"):
        assert groups(dataset.records, lambda r: getattr(r, key)) == groups(cohort.records, lambda r: getattr(r, key))
    split = {r.subject_id: name for name, records in subject_split(cohort.records, seed=SEED).items() for r in records}
    by_image = dict(zip((r.image_id for r in dataset.records), cohort.records))
    for read in dataset.records:
        assert dataset.splits[read.subject_id] == split[by_image[read.image_id].subject_id]


def test_deterministic_and_refuses_a_non_empty_folder(written, tmp_path):
    out, _ = written
    again = write_masks(tmp_path / "again", num_subjects=NUM, image_size=SIZE, seed=SEED)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((out / p).read_bytes() == (again / p).read_bytes() for p in files)
    with pytest.raises(FileExistsError, match="not an empty folder"):
        write_masks(again, num_subjects=1, image_size=SIZE)
    for bad in (4, 16.0, True):
        with pytest.raises(ValueError, match="image_size"):
            write_masks(tmp_path / "bad", num_subjects=1, image_size=bad)
    assert not (tmp_path / "bad").exists()


def test_the_command_writes_the_masks_layout(tmp_path):
    out = tmp_path / "dense"
    result = CliRunner().invoke(data, ["phantom", "--out", str(out), "--layout", "masks", "--subjects", "1",
                                       "--image-size", "32"])  # the health check's smallest side is 28 px
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith("Wrote the masks phantom (")
    assert (out / "landmarks.csv").is_file() and read_dataset(out).format == "masks"
    assert CliRunner().invoke(data, ["check", str(out)]).exit_code == 0
