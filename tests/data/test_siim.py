"""SIIM-ACR: the challenge's RLE on hand-computed masks, the phantom layout read back, bad rows refused."""

import csv

import numpy as np
import pytest
from click.testing import CliRunner

from kmedssl.cli.data import data
from kmedssl.data.errors import DataError
from kmedssl.data.formats import siim
from kmedssl.data.formats.rle import decode_rle, encode_rle
from kmedssl.data.phantom import ChestCohort
from kmedssl.data.phantom.siim_writer import write_siim
from kmedssl.data.records import FRONTAL_VIEWS

pytestmark = pytest.mark.backend_free

NUM, SIZE, SEED = 3, 32, 4  # 6 frontal views, 4 with pneumothorax

# 4 x 4; column-major positions: column c holds positions 4c .. 4c + 3.
TWO_RUNS = np.array([[0, 0, 0, 0],
                     [1, 0, 0, 1],
                     [1, 0, 0, 1],
                     [0, 0, 0, 0]], dtype=bool)  # positions 1-2 and 13-14
ACROSS_COLUMNS = np.array([[0, 1, 0, 0],
                           [0, 0, 0, 0],
                           [0, 0, 0, 0],
                           [1, 0, 0, 0]], dtype=bool)  # positions 3-4: one run over a column break
LAST_PIXEL = np.zeros((4, 4), dtype=bool)
LAST_PIXEL[3, 3] = True  # position 15, a run that reaches the end


@pytest.mark.parametrize("mask, text", [
    (TWO_RUNS, "1 2 10 2"),
    (ACROSS_COLUMNS, "3 2"),
    (LAST_PIXEL, "15 1"),
    (np.zeros((4, 4), dtype=bool), "-1"),
    (np.ones((4, 4), dtype=bool), "0 16"),
])
def test_rle_hand_computed_both_directions(mask, text):
    assert encode_rle(mask) == text
    np.testing.assert_array_equal(decode_rle(text, 4, 4), mask)


def test_rle_is_column_major_on_a_rectangle():
    mask = np.zeros((2, 3), dtype=bool)
    mask[1, 0] = mask[0, 1] = True  # positions 1 and 2 (row + 2 * column)
    assert encode_rle(mask) == "1 2"
    np.testing.assert_array_equal(decode_rle("1 2", 2, 3), mask)
    np.testing.assert_array_equal(decode_rle(" 1 2 ", 2, 3), mask)  # the CSV's leading space


@pytest.mark.parametrize("text, message", [
    ("1 2 3", "odd number of values (3)"),
    ("1 2 10 4", "run 2 ends at pixel 17, past the last pixel"),
    ("1 2.5", "value 2 ('2.5') is not a non-negative integer"),
    ("1 -2", "value 2 ('-2') is not a non-negative integer"),
    ("1 0", "run 1 has length 0"),
    ("", "blank EncodedPixels"),
])
def test_bad_rle_is_refused(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode_rle(text, 4, 4)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = write_siim(tmp_path_factory.mktemp("siim") / "phantom", num_subjects=NUM, image_size=SIZE, seed=SEED)
    return out, ChestCohort(num_subjects=NUM, seed=SEED)


def test_phantom_round_trip(written):
    out, cohort = written
    dataset = siim.read_siim(out)
    frontal = [r for r in cohort.records if r.view in FRONTAL_VIEWS]
    assert len(dataset.records) == len(frontal) and dataset.skipped == []
    by_pixels = {}
    for record in dataset.records:
        image, masks = dataset.load(record)
        by_pixels[np.round(image * 255).astype(np.uint8).tobytes()] = (record, masks)
    positives = 0
    for record in frontal:
        pixels = np.round(cohort.render(record, image_size=SIZE) * 255).astype(np.uint8)
        read, masks = by_pixels[pixels.tobytes()]  # every render is read back, exactly
        truth = cohort.ground_truth(record, SIZE).masks["pneumothorax_visible"]
        np.testing.assert_array_equal(masks["pneumothorax"], truth)
        assert read.labels == (float(truth.any()),) and read.size == (SIZE, SIZE)
        positives += truth.any()
    assert positives > 0


def test_written_csv_and_dicoms_carry_no_identifiers(written):
    out, _ = written
    with open(out / "train-rle.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["ImageId", " EncodedPixels"]
    assert all(row[0].startswith("2.25.") for row in rows[1:])
    import pydicom
    header = pydicom.dcmread(next((out / "dicom-images-train").rglob("*.dcm")), stop_before_pixels=True)
    assert header.PatientID.isdigit() and "PatientName" not in header and "PatientBirthDate" not in header


def _copy_with_rows(written, tmp_path, extra):
    out, _ = written
    import shutil
    target = tmp_path / "copy"
    shutil.copytree(out, target)
    with open(target / "train-rle.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    uid = rows[1][0]
    rows += [[uid, text] for text in extra]
    with open(target / "train-rle.csv", "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    return target, len(rows), uid


def test_rows_of_one_image_are_ored(written, tmp_path):
    target, _, uid = _copy_with_rows(written, tmp_path, ["0 1", "-1"])
    dataset = siim.read_siim(target)
    record = next(r for r in dataset.records if r.image_id == siim.dicom.pseudonym(uid))
    _, masks = dataset.load(record)
    assert masks["pneumothorax"][0, 0] and record.labels == (1.0,)
    before = siim.read_siim(written[0])
    _, old = before.load(next(r for r in before.records if r.image_id == record.image_id))
    np.testing.assert_array_equal(masks["pneumothorax"] & ~old["pneumothorax"],
                                  np.eye(1, SIZE * SIZE, dtype=bool).reshape(SIZE, SIZE))


@pytest.mark.parametrize("text, message", [
    ("1 2 3", "odd number of values"),
    (f"1 {SIZE * SIZE}", "past the last pixel"),
    ("1 x", "is not a non-negative integer"),
])
def test_bad_row_is_one_line_naming_the_csv_and_row(written, tmp_path, text, message):
    target, count, _ = _copy_with_rows(written, tmp_path, [text])
    with pytest.raises(DataError) as raised:
        siim.read_siim(target)
    text = str(raised.value)
    assert "\n" not in text and text.startswith(f"{target / 'train-rle.csv'}: row {count}: ") and message in text
    skipped = siim.read_siim(target, on_error="skip")
    assert len(skipped.skipped) == 1 and len(skipped.records) == len(siim.read_siim(written[0]).records) - 1


def test_rows_and_files_that_do_not_match(written, tmp_path):
    target, count, _ = _copy_with_rows(written, tmp_path, [])
    with open(target / "train-rle.csv", "a", newline="") as handle:
        handle.write("2.25.1,-1\n")
    with pytest.raises(DataError, match=f"^{target / 'train-rle.csv'}: row {count + 1}: its ImageId has no DICOM"):
        siim.read_siim(target)
    rows = (written[0] / "train-rle.csv").read_text().splitlines()
    (target / "train-rle.csv").write_text("\n".join(r for r in rows if not r.startswith(rows[1].split(",")[0])))
    with pytest.raises(DataError, match=r"\.dcm: no row in train-rle\.csv for this image$"):
        siim.read_siim(target)
    (target / "train-rle.csv").write_text("ImageId,Mask\n")
    with pytest.raises(DataError, match="expected the columns"):
        siim.read_siim(target)


def test_cli_writes_the_layout(tmp_path):
    result = CliRunner().invoke(data, ["phantom", "--out", str(tmp_path / "s"), "--layout", "siim",
                                       "--subjects", "2", "--image-size", "16"])
    assert result.exit_code == 0, result.output
    assert "check it with: kmedssl data check" in result.output.splitlines()[-1]
    assert len(siim.read_siim(tmp_path / "s").records) > 0
