"""Bad data input (issue 13, part B): every defect is one named error, a named `data check` finding, or a
counted skip under ``--on-error skip``; nothing exhausts memory, nothing crashes, nothing is replaced.

The corpus is generated here, small: a 20000 x 20000 PNG (a decompression bomb of ~50 KB), a PNG whose
header declares 12000 x 12000 (above the image gate's limit, below PIL's own), float TIFFs with NaN and
Inf, a LAB TIFF (a mode that is not read), MedMNIST files with a 2**31 - 1 label or a header declaring
64 GiB, folder CSVs with ``../``, absolute and symlinked paths out of the data root and a symlink loop.
"""

import csv
import io
import json
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from kmedssl.data.errors import DataError
from kmedssl.data.formats import folder, medmnist, read_dataset
from kmedssl.data.images import MAX_PIXELS, check_pixel_count, read_image
from kmedssl.data.phantom.radimagenet_writer import write_radimagenet
from kmedssl.data.phantom.writer import write_mimic_cxr
from tests.data.test_dicom import write_dicom
from tests.reliability.harness import (ADDRESS_SPACE_LIMIT, assert_one_line_error, assert_process_error,
                                       assert_unchanged, invoke, run_kmedssl, snapshot)

# PIL warns from 89 million pixels on; kmedssl's own limit applies (pytest resets kmedssl's filter).
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
TINY = ["--epochs", "1", "--batch-size", "4", "--image-size", "32", "--set", "patch_size=8"]
BIG_LABEL = 2**31 - 1


# === The corpus ===


def png_bomb(path, width, height):
    """A valid 1-bit grey PNG of zeros, compressed row by row (20000 x 20000 takes ~50 KB on disk)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row = zlib.compressobj(9), bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def float_tiff(path, value, count):
    """An 8 x 8 float32 TIFF with ``count`` pixels set to ``value`` (NaN or Inf)."""
    pixels = np.full((8, 8), 0.5, np.float32)
    pixels.flat[:count] = value
    Image.fromarray(pixels, mode="F").save(path, format="TIFF")
    return path


def lab_tiff(path):
    Image.new("LAB", (8, 8)).save(path, format="TIFF")
    return path


def good_png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.arange(32 * 32).reshape(32, 32) * (value + 1)) % 256
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


BAD_IMAGES = {  # name -> (writer, fragment of the error, health category)
    "bomb.png": (lambda p: png_bomb(p, 20000, 20000), f"above the limit of {MAX_PIXELS} pixels", "dimensions"),
    "huge.png": (lambda p: png_bomb(p, 12000, 12000), "12000x12000 px (144000000 pixels) is above the limit",
                 "dimensions"),
    "nan.tif": (lambda p: float_tiff(p, np.nan, 3), "3 of 64 pixels are non-finite (NaN or Inf)", "pixel-values"),
    "inf.tif": (lambda p: float_tiff(p, np.inf, 1), "1 of 64 pixels are non-finite (NaN or Inf)", "pixel-values"),
    "lab.tif": (lab_tiff, "unsupported image mode 'LAB'", "bit-depth"),
}


def bad_folder(tmp_path, good=3):
    """A folder CSV data set (every row in the train split): ``good`` images, every ``BAD_IMAGES`` file, and
    rows leading out of the data root: ``../x.png``, an absolute path, a symlink out and a symlink loop.

    Returns ``(root, {row path: fragment of its problem})`` for the rows the reader refuses.
    """
    root, outside = tmp_path / "data", good_png(tmp_path / "x.png", 99)
    rows = [f"img/{k}.png" for k in range(good)]
    for k in range(good):
        good_png(root / f"img/{k}.png", k)
    for name, (write, _, _) in BAD_IMAGES.items():
        write(root / "img" / name)
        rows.append(f"img/{name}")
    (root / "img/link.png").symlink_to(outside)
    (root / "img/loop.png").symlink_to("loop.png")
    refused = {"../x.png": "outside the data root", str(outside): "outside the data root",
               "img/link.png": "outside the data root", "img/loop.png": "cannot be read (a symlink loop)"}
    table = "\n".join(["path,split"] + [f"{row},train" for row in rows + list(refused)])
    (root / "labels.csv").write_text(table + "\n")
    return root, refused


def medmnist_arrays(size=28, count=8):
    arrays, rng = {}, np.random.default_rng(0)
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, size, size), np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % 3).reshape(count, 1).astype(np.int64)
    return arrays


def npz_with_forged_header(path):
    """A MedMNIST .npz whose train_images header declares 8 images of 65536 x 131072 uint8 (64 GiB) over 16
    bytes; every other array is sound (8 train labels, so only the images' size is wrong)."""
    arrays = medmnist_arrays()
    with zipfile.ZipFile(path, "w") as archive:
        for key, array in arrays.items():
            buffer = io.BytesIO()
            if key == "train_images":
                np.lib.format.write_array_header_1_0(
                    buffer, {"descr": "|u1", "fortran_order": False, "shape": (8, 2**16, 2**17)})
                buffer.write(bytes(16))
            else:
                np.lib.format.write_array(buffer, array)
            archive.writestr(f"{key}.npy", buffer.getvalue())
    return path


def skipped_rows(run):
    with open(run / "data_skipped.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# === The image gate ===


@pytest.mark.backend_free
@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_the_image_gate_refuses_bad_images_naming_the_file(tmp_path, name):
    write, fragment, _ = BAD_IMAGES[name]
    path = write(tmp_path / name)
    assert path.stat().st_size < 200_000
    with pytest.raises(DataError) as raised:
        read_image(path)
    assert str(raised.value).startswith(f"{path}: ") and fragment in str(raised.value)


@pytest.mark.backend_free
def test_a_10000_px_radiograph_passes_the_pixel_limit():
    check_pixel_count("xray.png", 10000, 10000)
    with pytest.raises(DataError, match=r"^xray.png: 11586x11586 px \(134235396 pixels\) is above the limit"):
        check_pixel_count("xray.png", 11586, 11586)


@pytest.mark.backend_free
def test_dicom_pixels_go_through_the_gate(tmp_path):
    from kmedssl.data.formats.dicom import read_dicom_pixels

    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8)
    huge = tmp_path / "huge.dcm"
    write_dicom(huge, pixels, Rows=20000, Columns=20000)
    with pytest.raises(DataError, match=f"^{huge}: 20000x20000 px .* above the limit of {MAX_PIXELS} pixels"):
        read_dicom_pixels(huge)
    nan = tmp_path / "nan.dcm"
    write_dicom(nan, pixels, RescaleIntercept="NaN")
    with pytest.raises(DataError, match=f"^{nan}: 64 of 64 pixels are non-finite"):
        read_dicom_pixels(nan)


@pytest.mark.backend_free
def test_data_check_names_every_bad_image_and_path_as_a_defect(tmp_path):
    root, refused = bad_folder(tmp_path)
    report = tmp_path / "health.json"
    exit_code, output = invoke("data", "check", root, "--json", report)
    assert exit_code == 1 and "Traceback" not in output and "Result: NOT OK" in output
    findings = json.loads(report.read_text())["findings"]
    categories = {finding["file"]: finding["category"] for finding in findings}
    for name, (_, fragment, category) in BAD_IMAGES.items():
        assert categories[str(root / "img" / name)] == category, findings
        assert f"img/{name}: " in output and fragment in output
    table = [finding for finding in findings if finding["file"] == str(root / "labels.csv")]
    for row, fragment in refused.items():
        message = next(finding["message"] for finding in table if f"{root / row}: " in finding["message"])
        assert fragment in message and f"{row}: {fragment}" in output
    assert sorted(finding["category"] for finding in table) == ["skipped"] * 3 + ["unreadable"]  # the loop


# === Paths out of the data root ===


@pytest.mark.backend_free
def test_folder_csv_paths_out_of_the_root_are_refused_or_counted(tmp_path):
    root, refused = bad_folder(tmp_path)
    line = 2 + 3 + len(BAD_IMAGES)  # after the header, the good and the bad images
    with pytest.raises(DataError, match=rf"^{root / 'labels.csv'}: line {line}: .*\.\./x\.png: outside the data root"):
        folder.read(root)
    dataset = folder.read(root, on_error="skip")
    assert len(dataset.records) == 3 + len(BAD_IMAGES) and len(dataset.skipped) == len(refused)
    for (file, message), (row, fragment) in zip(dataset.skipped, refused.items()):
        assert file == str(root / "labels.csv") and f"{root / row}: {fragment}" in message


@pytest.mark.backend_free
def test_folder_tree_links_out_and_loops_are_counted_not_raw_oserrors(tmp_path):
    root = tmp_path / "data"
    for k in range(2):
        good_png(root / "a" / f"{k}.png", k)
    (root / "a/up").symlink_to("..")          # a folder link to a folder it is in
    (root / "a/self.png").symlink_to("self.png")
    (root / "a/out.png").symlink_to(good_png(tmp_path / "x.png", 7))
    dataset = folder.read(root, on_error="skip")
    assert sorted(r.image_id for r in dataset.records) == ["a/0.png", "a/1.png"]
    expected = {"out.png": "outside the data root", "self.png": "cannot be read (a symlink loop)",
                "up": "symbolic link to a folder it is in (a loop)"}
    assert [file.rsplit("/", 1)[1] for file, _ in dataset.skipped] == list(expected)
    assert all(message.startswith(expected[file.rsplit("/", 1)[1]]) for file, message in dataset.skipped)
    with pytest.raises(DataError, match=f"^{root / 'a/out.png'}: outside the data root"):
        folder.read(root)


@pytest.mark.backend_free
def test_other_readers_refuse_links_out_of_their_data_root(tmp_path):
    outside = good_png(tmp_path / "outside.png", 5)
    mimic = write_mimic_cxr(tmp_path / "mimic", num_subjects=2, image_size=8)
    image = sorted((mimic / "files").rglob("*.jpg"))[0]
    image.unlink()
    image.symlink_to(outside)
    rin = write_radimagenet(tmp_path / "rin", num_images=3, image_size=8)
    (sorted(rin.rglob("*.png"))[0].parent / "link.png").symlink_to(outside)
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    write_dicom(dicom / "a.dcm", np.zeros((8, 8), np.uint16))
    (dicom / "loop.dcm").symlink_to("loop.dcm")
    for root, format, file, problem in [(mimic, "mimic-cxr", image, "outside the data root"),
                                        (rin, "radimagenet", "link.png", "outside the data root"),
                                        (dicom, "dicom", "loop.dcm", "cannot be read (a symlink loop)")]:
        (skipped,) = read_dataset(root, format, on_error="skip").skipped
        assert f"{file}: {problem}" in ": ".join(skipped), skipped


# === Training skips and stops ===


def test_pretrain_skip_counts_and_lists_every_bad_item(tmp_path):
    root, refused = bad_folder(tmp_path)
    run = tmp_path / "run"
    samples = 3 + len(BAD_IMAGES)  # 8: every training sample is loaded in the epoch
    exit_code, output = invoke("pretrain", "spcl", "--data", root, "--on-error", "skip", *TINY,
                               "--steps-per-epoch", samples // 4, "--output", run)
    assert exit_code == 0, output
    rows = skipped_rows(run)
    listed = {row["file"] for row in rows}
    assert {str(root / "img" / name) for name in BAD_IMAGES} <= listed
    assert sum(row["file"] == str(root / "labels.csv") for row in rows) == len(refused)
    assert len(rows) == len(BAD_IMAGES) + len(refused)


@pytest.mark.parametrize("name", ["bomb.png", "nan.tif"])
def test_pretrain_stops_with_one_line_naming_a_bad_image(tmp_path, name):
    root = tmp_path / "data"
    for k in range(3):
        good_png(root / f"img/{k}.png", k)
    BAD_IMAGES[name][0](root / "img" / name)
    rows = [f"img/{k}.png" for k in range(3)] + [f"img/{name}"]  # 4 samples: all loaded in the one step
    (root / "labels.csv").write_text("path,split\n" + "".join(f"{row},train\n" for row in rows))
    exit_code, output = invoke("pretrain", "spcl", "--data", root, *TINY, "--steps-per-epoch", 1,
                               "--output", tmp_path / "run")
    assert_one_line_error(exit_code, output, root / "img" / name, BAD_IMAGES[name][1])


# === MedMNIST: memory bounded by the data ===


def test_medmnist_huge_label_is_a_bad_row_not_a_huge_table(tmp_path):
    arrays = medmnist_arrays()
    arrays["train_labels"][0, 0] = BIG_LABEL
    file = tmp_path / "toymnist.npz"
    np.savez(file, **arrays)
    assert file.stat().st_size < 50_000
    problem = f"train_labels row 0: label [{BIG_LABEL}] is not a class index in 0..2 (at most 1000 classes are read)"
    # Under the address-space limit first: before the fix, reading this file took 21.6 GB.
    report = tmp_path / "health.json"
    process = run_kmedssl("data", "check", file, "--json", report, address_space=ADDRESS_SPACE_LIMIT)
    assert process.returncode == 1 and "Traceback" not in process.stderr, process.stderr
    assert problem in process.stdout
    assert json.loads(report.read_text())["findings"] == [
        {"file": str(file), "category": "label", "level": "error", "message": problem}]
    exit_code, output = invoke("pretrain", "spcl", "--data", file, *TINY, "--steps-per-epoch", 1,
                               "--output", tmp_path / "stopped")
    assert_one_line_error(exit_code, output, file, problem)
    run = tmp_path / "run"
    exit_code, output = invoke("pretrain", "spcl", "--data", file, "--on-error", "skip", *TINY,
                               "--steps-per-epoch", 1, "--output", run)
    assert exit_code == 0, output
    assert [(row["file"], row["problem"]) for row in skipped_rows(run)] == [(str(file), problem)]


@pytest.mark.backend_free
def test_medmnist_header_declaring_64_gib_is_one_line_naming_the_file(tmp_path):
    file = npz_with_forged_header(tmp_path / "toymnist.npz")
    assert file.stat().st_size < 50_000
    with pytest.raises(DataError, match="declares shape"):
        medmnist.read(file)  # in process: refused before anything is allocated
    process = run_kmedssl("data", "check", file, address_space=ADDRESS_SPACE_LIMIT)
    assert_process_error(process, file, "'train_images' declares shape (8, 65536, 131072) of uint8 (68719476736 "
                                        "bytes), but its member holds 16 bytes")


# === Writing the phantom never replaces files ===


@pytest.mark.backend_free
@pytest.mark.parametrize("layout", ["mimic-cxr", "radimagenet"])
def test_phantom_refuses_a_non_empty_out_folder(tmp_path, layout):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mimic-cxr-2.0.0-metadata.csv.gz").write_bytes(b"the user's own table")
    before = snapshot(out)
    exit_code, output = invoke("data", "phantom", "--out", out, "--layout", layout, "--subjects", 2,
                               "--image-size", 8)
    assert_one_line_error(exit_code, output, out, "exists and is not an empty folder")
    assert_unchanged(out, before)
    assert sorted(p.name for p in out.iterdir()) == ["mimic-cxr-2.0.0-metadata.csv.gz"]
