"""The dense layouts as formats: ``read_dataset`` (pretraining, classification) and ``read_dense`` on each layout
the phantom writes, format inference, and the image + mask folder's one-line errors."""

import shutil

import numpy as np
import pytest
from PIL import Image

from kmedssl.data.errors import DataError
from kmedssl.data.formats import DENSE_FORMATS, FORMATS, folder, infer_format, read_dataset, read_dense
from kmedssl.data.images import read_image
from kmedssl.data.phantom import ChestCohort
from kmedssl.data.phantom.chestx_det_writer import write_chestx_det
from kmedssl.data.phantom.ground_truth import LANDMARKS, STRUCTURES
from kmedssl.data.phantom.jsrt_writer import write_jsrt
from kmedssl.data.phantom.masks_writer import write_masks
from kmedssl.data.phantom.siim_writer import write_siim
from kmedssl.data.records import FRONTAL_VIEWS

pytestmark = pytest.mark.backend_free  # readers and writers: NumPy, PIL, pydicom

SUBJECTS, SIZE, SEED = 5, 32, 3
WRITERS = {"masks": write_masks, "siim": write_siim, "jsrt": write_jsrt, "chestx-det": write_chestx_det}


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    return {name: write(root / name, num_subjects=SUBJECTS, image_size=SIZE, seed=SEED)
            for name, write in WRITERS.items()}


def test_every_dense_layout_is_a_registered_format():
    assert set(DENSE_FORMATS) == set(WRITERS) and set(DENSE_FORMATS) <= set(FORMATS)


@pytest.mark.parametrize("layout", list(WRITERS))
def test_the_format_of_each_layout_is_inferred(layouts, layout):
    # masks: the folder reader also reads its index.csv; siim: the DICOM reader its files. The layout wins.
    assert infer_format(layouts[layout]) == layout
    assert read_dataset(layouts[layout]).format == layout and read_dense(layouts[layout]).format == layout


@pytest.mark.parametrize("layout", list(WRITERS))
def test_read_dataset_gives_the_dense_images_as_classification_records(layouts, layout):
    dense, dataset = read_dense(layouts[layout], layout), read_dataset(layouts[layout], layout)
    assert dataset.skipped == [] and dense.skipped == []
    assert [r.image_id for r in dataset.records] == [r.image_id for r in dense.records]
    assert [r.labels for r in dataset.records] == [r.labels for r in dense.records]
    assert dataset.label_names == dense.label_names and len(dataset.label_names) == len(dataset.records[0].labels)
    assert all(r.modality == "XR" and r.anatomy == "chest" for r in dataset.records)
    frontal = sum(r.view in FRONTAL_VIEWS for r in ChestCohort(num_subjects=SUBJECTS, seed=SEED).records)
    if layout == "masks":  # every view; the others hold the frontal views only
        assert sum(r.is_frontal for r in dataset.records) == frontal and any(r.is_lateral for r in dataset.records)
    else:
        assert len(dataset.records) == frontal and all(r.view == "PA" for r in dataset.records)
    record = dataset.records[0]
    image, masks = dense.load(dense.records[0])
    loaded = dataset.loader(record) if dataset.loader else read_image(record.path)  # as FileSource loads it
    np.testing.assert_array_equal(loaded, image)  # the image only, decoded the same way
    assert image.dtype == np.float32 and image.shape == dense.records[0].size
    assert set(masks) == set(dense.structures)
    assert all(m.dtype == bool and m.shape == image.shape for m in masks.values())


def test_subjects_studies_and_splits_come_from_what_each_format_has(layouts):
    cohort = ChestCohort(num_subjects=SUBJECTS, seed=SEED)
    frontal = [r for r in cohort.records if r.view in FRONTAL_VIEWS]
    siim = read_dataset(layouts["siim"])  # DICOM PatientID and StudyInstanceUID (pseudonyms)
    assert len({r.subject_id for r in siim.records}) == len({r.subject_id for r in frontal})
    assert len({r.study_id for r in siim.records}) == len(siim.records) and siim.splits is None
    jsrt = read_dataset(layouts["jsrt"])  # nothing: one image per subject and study
    assert all(r.subject_id == r.study_id == r.image_id for r in jsrt.records) and jsrt.splits is None
    chestx = read_dataset(layouts["chestx-det"])  # the JSON file's split
    assert set(chestx.splits.values()) <= {"train", "test"}
    assert all(chestx.splits[r.subject_id] == r.image_id.split("/")[0] for r in chestx.records)
    masks = read_dataset(layouts["masks"])  # index.csv, as the folder reader reads it
    assert masks.splits == read_dataset(layouts["masks"], "folder").splits
    dense = read_dense(layouts["masks"])
    assert all(r.split == masks.splits[r.subject_id] for r in dense.records)


def test_masks_and_landmarks_of_the_image_and_mask_folder_are_the_ground_truth(layouts):
    dense = read_dense(layouts["masks"])
    cohort = ChestCohort(num_subjects=SUBJECTS, seed=SEED)
    assert dense.structures == tuple(sorted(STRUCTURES)) and dense.landmark_names == LANDMARKS
    for record, truth_record in list(zip(dense.records, cohort.records))[:2]:
        truth = cohort.ground_truth(truth_record, SIZE)
        _, masks = dense.load(record)
        for name in STRUCTURES:
            np.testing.assert_array_equal(masks[name], truth.masks[name])
        for (x, y, visible), name in zip(record.landmarks, LANDMARKS):
            assert (x, y, visible) == pytest.approx((truth.landmarks[name].x, truth.landmarks[name].y,
                                                     truth.landmarks[name].visible), abs=1e-4)


def test_read_dense_refuses_a_format_without_masks(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(DataError, match="a format without masks"):
        read_dense(tmp_path)
    with pytest.raises(ValueError, match="Expected format in"):
        read_dense(tmp_path, "folder")


# === The image + mask folder's problems, one line each ===


@pytest.fixture
def masks_copy(layouts, tmp_path):
    return shutil.copytree(layouts["masks"], tmp_path / "copy")


def _one_line(path, match, **kwargs):
    with pytest.raises(DataError, match=match) as caught:
        read_dense(path, "masks", **kwargs)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_a_missing_mask_is_named(masks_copy):
    (masks_copy / "masks" / "heart" / "000001.png").unlink()
    message = _one_line(masks_copy, "missing heart mask of images/000001.png")
    assert message.startswith(str(masks_copy / "masks" / "heart" / "000001.png"))
    skipped = read_dense(masks_copy, "masks", on_error="skip")
    assert "images/000001.png" not in [r.image_id for r in skipped.records] and len(skipped.skipped) == 1
    assert "images/000001.png" not in [r.image_id for r in read_dataset(masks_copy, "masks", on_error="skip").records]


def test_a_mask_of_another_size_is_named(masks_copy):
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(masks_copy / "masks" / "lung_left" / "000000.png")
    _one_line(masks_copy, r"lung_left/000000.png: 16x16 mask for the 32x32 image images/000000.png")


def test_bad_landmark_rows_are_named(masks_copy):
    table = masks_copy / "landmarks.csv"
    lines = table.read_text().splitlines()
    original = list(lines)
    lines[1] = "images/000000.png,carina,40.0,3.0,1"
    table.write_text("\n".join(lines) + "\n")
    _one_line(masks_copy, r"landmarks.csv: line 2: landmark carina \(40, 3\) is outside the 32x32 image")
    lines[1] = "images/000000.png,carina,4.0,3.0,yes"
    table.write_text("\n".join(lines) + "\n")
    _one_line(masks_copy, "line 2: landmark carina: visible is 'yes', expected 0 or 1")
    lines[1] = "images/999999.png,carina,4.0,3.0,1"
    table.write_text("\n".join(lines) + "\n")
    _one_line(masks_copy, r"line 2: path 'images/999999.png' is no image of the data set")
    table.write_text("\n".join(original + [original[1]]) + "\n")
    _one_line(masks_copy, "landmark carina of images/000000.png is listed twice")


def test_a_folder_without_index_csv_is_read_one_image_per_subject(masks_copy):
    (masks_copy / "index.csv").unlink()
    dense = read_dense(masks_copy)
    assert len(dense.records) == len(list((masks_copy / "images").iterdir())) and dense.label_names == ()
    assert all(r.subject_id == r.study_id == r.image_id and r.split == "" for r in dense.records)
    assert dense.records[0].landmarks  # landmarks.csv paths are the images' paths below the folder
    assert not folder.looks_like(masks_copy / "masks" / "heart" / "x") and infer_format(masks_copy) == "masks"
