"""JSRT + SCR: the raw 12-bit image format, the phantom layout read back, wrong-size masks refused."""

import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kmedssl.cli.data import data
from kmedssl.data.errors import DataError
from kmedssl.data.formats import jsrt
from kmedssl.data.phantom import CHEST_LABELS, ChestCohort
from kmedssl.data.phantom.jsrt_writer import write_jsrt
from kmedssl.data.records import FRONTAL_VIEWS

pytestmark = pytest.mark.backend_free

NUM, SIZE, SEED = 3, 32, 4


def test_raw_image_is_big_endian_12_bit_inverted(tmp_path):
    values = np.array([[0, 4095], [1, 256]], dtype=">u2")
    path = tmp_path / "X.IMG"
    path.write_bytes(values.tobytes())
    assert path.read_bytes() == bytes([0, 0, 0x0F, 0xFF, 0, 1, 1, 0])  # big-endian on disk
    np.testing.assert_allclose(jsrt.read_raw(path), 1.0 - values.astype(np.float32) / 4095, atol=1e-7)
    path.write_bytes(np.array([[0, 4096], [0, 0]], dtype=">u2").tobytes())
    with pytest.raises(DataError, match="1 values above 4095"):
        jsrt.read_raw(path)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = write_jsrt(tmp_path_factory.mktemp("jsrt") / "phantom", num_subjects=NUM, image_size=SIZE, seed=SEED)
    return out, ChestCohort(num_subjects=NUM, seed=SEED)


def test_phantom_round_trip(written):
    out, cohort = written
    dataset = jsrt.read_jsrt(out)
    frontal = [r for r in cohort.records if r.view in FRONTAL_VIEWS]
    assert len(dataset.records) == len(frontal) and dataset.skipped == []
    assert sorted((out / "masks").iterdir()) == sorted(out / "masks" / f for f in jsrt.SCR_FOLDERS)
    nodule = CHEST_LABELS.index("nodule")
    counts = {"JPCLN": 0, "JPCNN": 0}
    for source in frontal:
        prefix = "JPCLN" if source.labels[nodule] else "JPCNN"
        counts[prefix] += 1
        record = next(r for r in dataset.records if r.image_id == f"{prefix}{counts[prefix]:03d}")
        image, masks = dataset.load(record)
        assert record.size == (SIZE // 2, SIZE // 2) and record.labels == (float(prefix == "JPCLN"),)
        stored = np.round((1.0 - cohort.render(source, image_size=SIZE).astype(np.float64)) * 4095)
        expected = (1.0 - stored / 4095).reshape(SIZE // 2, 2, SIZE // 2, 2).mean(axis=(1, 3))
        np.testing.assert_allclose(image, expected, atol=1e-6)
        truth = cohort.ground_truth(source, SIZE // 2).masks
        assert set(masks) == set(jsrt.STRUCTURES)
        for name in jsrt.STRUCTURES:
            np.testing.assert_array_equal(masks[name], truth[name])
    assert counts["JPCLN"] > 0 or counts["JPCNN"] > 0


def test_masks_split_over_the_scr_folds_are_found(written, tmp_path):
    target = tmp_path / "folds"
    shutil.copytree(written[0], target)
    (target / "fold1").mkdir()
    shutil.move(target / "masks", target / "fold1" / "masks")
    assert len(jsrt.read_jsrt(target).records) == len(jsrt.read_jsrt(written[0]).records)


def test_wrong_size_mask_is_one_line_naming_the_file(written, tmp_path):
    target = tmp_path / "bad"
    shutil.copytree(written[0], target)
    bad = sorted((target / "masks" / "heart").iterdir())[0]
    Image.fromarray(np.zeros((SIZE, SIZE), dtype=np.uint8)).save(bad, format="GIF")
    with pytest.raises(DataError) as raised:
        jsrt.read_jsrt(target)
    text = str(raised.value)
    assert "\n" not in text and text.startswith(f"{bad}: {SIZE}x{SIZE} mask for the {SIZE}x{SIZE} image")
    assert f"expected {SIZE // 2}x{SIZE // 2}" in text
    skipped = jsrt.read_jsrt(target, on_error="skip")
    assert skipped.skipped == [(str(bad), text.split(": ", 1)[1])]


def test_bad_raw_size_and_missing_mask(written, tmp_path):
    target = tmp_path / "bad"
    shutil.copytree(written[0], target)
    image = sorted((target / "images").iterdir())[0]
    image.write_bytes(b"\0" * 10)
    with pytest.raises(DataError, match=f"^{image}: 10 bytes is not a square 16-bit raw image"):
        jsrt.read_jsrt(target)
    shutil.copytree(written[0], tmp_path / "missing")
    mask = sorted((tmp_path / "missing" / "masks" / "left clavicle").iterdir())[0]
    mask.unlink()
    with pytest.raises(DataError, match=f"^{mask}: missing 'left clavicle' mask of {mask.stem}"):
        jsrt.read_jsrt(tmp_path / "missing")


def test_cli_writes_the_layout(tmp_path):
    result = CliRunner().invoke(data, ["phantom", "--out", str(tmp_path / "j"), "--layout", "jsrt",
                                       "--subjects", "2", "--image-size", "16"])
    assert result.exit_code == 0, result.output
    assert "check it with: kmedssl data check" in result.output.splitlines()[-1]
    assert len(jsrt.read_jsrt(tmp_path / "j").records) > 0
