"""Saved state (issue 13): tampered checkpoints and encoders are refused with one line, before anything is
built or deleted; skipped non-finite steps pass through Keras's progress bar.

One tiny real S-PCL run per module (``tiny_run``, with a NaN batch skipped under ``on_nonfinite=skip``)
provides the checkpoint and the encoder that each case copies and tampers with: checkpoint arrays and meta
are rewritten with NumPy (``allow_pickle=False``), encoders by rewriting the ``.keras`` zip's
``config.json``. The CLI cases run on one backend; the progress-bar case that the skip fix needs on every
backend uses the tiny Keras model of ``tests/training/test_checkpoints.py`` (a CLI run compiles for tens of
seconds on tensorflow and jax).
"""

import csv
import io
import json
import shutil
import time
import types
import zipfile

import keras
import numpy as np
import pytest

from kmedssl.backbones import SwinTransformer
from kmedssl.data.pipeline import ViewDataset
from kmedssl.training import checkpoints, loop, runs
from kmedssl.training.checkpoints import CheckpointError
from tests.reliability.harness import (
    ADDRESS_SPACE_LIMIT,
    assert_one_line_error,
    assert_process_error,
    assert_unchanged,
    invoke,
    run_kmedssl,
    snapshot,
)
from tests.training.test_checkpoints import BATCH, STEPS, tiny_data, tiny_model

TINY = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--image-size", "32",
        "--set", "patch_size=8", "--set", "data_size=40"]
CHECKPOINT = f"{runs.CHECKPOINT_DIR}/step-00000002.npz"  # the newest (and only) checkpoint of a tiny run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished tiny S-PCL run whose step 2 (the last) was NaN and skipped: ``.path`` (holding
    ``checkpoints/step-00000002.npz`` and ``encoder.keras``) and the command's ``.output``."""
    run = tmp_path_factory.mktemp("saved-state") / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:
        poison_step_2(monkeypatch)
        exit_code, output = invoke("pretrain", "spcl", *TINY, "--set", "on_nonfinite=skip", "--output", run)
    assert exit_code == 0, output
    return types.SimpleNamespace(path=run, output=output)


def poison_step_2(monkeypatch):
    """Make batch 2 of epoch 1 (the run's step 2, the last of a tiny run's epoch) all NaN."""
    original = ViewDataset.batch

    def poisoned(self, epoch, index, part=(0, 1)):
        batch = original(self, epoch, index, part)
        return {key: value * np.nan for key, value in batch.items()} if (epoch, index) == (0, 1) else batch

    monkeypatch.setattr(ViewDataset, "batch", poisoned)


def copied_run(tiny_run, tmp_path):
    return shutil.copytree(tiny_run.path, tmp_path / "run")


def rewrite_checkpoint(path, change):
    """Rewrite the checkpoint at ``path`` with ``change(meta, arrays)`` applied (both edited in place)."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(bytes(arrays.pop("meta")).decode())
    change(meta, arrays)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def rewrite_encoder(source, target, change):
    """Copy the ``.keras`` zip ``source`` to ``target`` with ``change(config)`` applied to its ``config.json``."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as copy:
        for item in original.infolist():
            data = original.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                change(config)
                data = json.dumps(config).encode()
            copy.writestr(item, data)
    return target


# === Checkpoints ===


def string_epoch(meta, arrays):
    meta["epoch"] = "1"
    return "epoch='1'"


def string_history(meta, arrays):
    meta["history"] = "x"
    return "history='x'"


def malformed_variables(meta, arrays):
    meta["variables"]["model"][0] = {"path": 3}
    return "variables.model[0]={'path': 3}"


def nan_weights(meta, arrays):
    """NaN in the first floating-point model variable; the message names it."""
    index = next(i for i, spec in enumerate(meta["variables"]["model"]) if spec["dtype"].startswith("float"))
    arrays[f"model/{index:05d}"] = np.full_like(arrays[f"model/{index:05d}"], np.nan)
    return f"{meta['variables']['model'][index]['path']} (model/{index:05d}) holds NaN or Inf"


@pytest.mark.backend_free
@pytest.mark.parametrize("tamper", [string_epoch, string_history, malformed_variables, nan_weights])
def test_a_tampered_checkpoint_is_one_line_and_nothing_is_deleted(tamper, tiny_run, tmp_path):
    run = copied_run(tiny_run, tmp_path)
    fragments = []
    rewrite_checkpoint(run / CHECKPOINT, lambda meta, arrays: fragments.append(tamper(meta, arrays)))
    before = snapshot(run)
    exit_code, output = invoke("pretrain", "spcl", *TINY, "--output", run, "--resume")
    assert_one_line_error(exit_code, output, run / CHECKPOINT, *fragments, exit_codes=(1,))
    assert_unchanged(run, before)


@pytest.mark.backend_free
@pytest.mark.parametrize("field, value, fragment", [
    ("batch", -1, "batch=-1"),
    ("step", True, "step=True"),
    ("step", 5, "step=5 (expected epoch * steps_per_epoch + batch"),
    ("steps_per_epoch", 0, "steps_per_epoch=0"),
    ("skipped_steps", 1.5, "skipped_steps=1.5"),
    ("history", [{"epoch": 1, "loss": "low"}], "history="),
    ("data", {"skipped": "x"}, "data="),
    ("data", {"bad": [-1]}, "data="),
    ("backend", 7, "backend=7"),
    ("variables", {"model": []}, "variables="),
    ("variables", {"model": {}, "optimizer": [], "metrics": []}, "variables.model={}"),
])
def test_every_meta_field_is_checked(field, value, fragment, tiny_run, tmp_path):
    path = shutil.copy(tiny_run.path / CHECKPOINT, tmp_path / "step-00000002.npz")
    rewrite_checkpoint(path, lambda meta, arrays: meta.update({field: value}))
    with pytest.raises(CheckpointError, match="bad checkpoint metadata") as error:
        checkpoints.load_checkpoint(path)
    assert str(path) in str(error.value) and fragment in str(error.value) and "\n" not in str(error.value)


@pytest.mark.backend_free
def test_an_array_of_text_is_refused(tiny_run, tmp_path):
    path = shutil.copy(tiny_run.path / CHECKPOINT, tmp_path / "step-00000002.npz")
    rewrite_checkpoint(path, lambda meta, arrays: arrays.update({"optimizer/00000": np.array("x")}))
    with pytest.raises(CheckpointError, match=r"optimizer/00000 .* wrong shape or type"):
        checkpoints.load_checkpoint(path)


def forge_array_header(path, member, shape):
    """Rewrite ``member`` of the ``.npz`` at ``path`` so that its ``.npy`` header declares ``shape`` (float32)
    while its data stays a few bytes."""
    with zipfile.ZipFile(path) as original:
        items = {item.filename: original.read(item) for item in original.infolist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    items[member] = header.getvalue() + bytes(16)
    with zipfile.ZipFile(path, "w") as forged:
        for name, data in items.items():
            forged.writestr(name, data)


@pytest.mark.backend_free
def test_a_checkpoint_header_declaring_terabytes_is_refused_before_allocating(tiny_run, tmp_path):
    run = copied_run(tiny_run, tmp_path)
    forge_array_header(run / CHECKPOINT, "model/00000.npy", (2**20, 2**20))
    before = snapshot(run)
    process = run_kmedssl("pretrain", "spcl", *TINY, "--output", run, "--resume", address_space=ADDRESS_SPACE_LIMIT)
    assert_process_error(process, run / CHECKPOINT, "'model/00000' declares shape (1048576, 1048576)",
                         "forged header")
    assert_unchanged(run, before)


# === Encoders ===


def vit_config(config):
    assert config["registered_name"] == "kmedssl>VisionTransformer"
    return config["config"]


@pytest.mark.backend_free
def test_an_encoder_with_patch_size_0_is_one_line(tiny_run, tmp_path):
    path = rewrite_encoder(tiny_run.path / runs.ENCODER_FILE, tmp_path / "encoder.keras",
                           lambda config: vit_config(config).update(patch_size=0))
    exit_code, output = invoke("evaluate", path)
    assert_one_line_error(exit_code, output, path, "invalid VisionTransformer config", "patch_size=0",
                          exit_codes=(1,))


@pytest.mark.backend_free
def test_an_encoder_declaring_far_more_weights_than_it_holds_is_refused_before_building(tiny_run, tmp_path):
    # A ~2 MB file (the tiny run's weights) declaring a 9.7e9-weight ViT: building it would take ~36 GiB.
    path = rewrite_encoder(tiny_run.path / runs.ENCODER_FILE, tmp_path / "encoder.keras",
                           lambda config: vit_config(config).update(dim=4096, depth=48, num_heads=16))
    assert path.stat().st_size < 4 * 2**20
    process = run_kmedssl("evaluate", path, address_space=ADDRESS_SPACE_LIMIT)
    assert_process_error(process, path, "declares a model of 9,", "weights file holds only")


@pytest.mark.backend_free
def test_the_encoder_of_a_real_run_passes_the_checks(tiny_run):
    checkpoints.check_model_file(tiny_run.path / runs.ENCODER_FILE)


@pytest.fixture(scope="module")
def swin_file(tmp_path_factory):
    """A tiny Swin (16 px, 2 px patches: an 8 x 8 grid in 4 windows, shifted in block 1, then 4 x 4) saved as
    ``.keras``, and its tokens on two images."""
    swin = SwinTransformer(image_size=16, patch_size=2, embed_dim=4, depths=(2, 1), num_heads=(1, 2), window_size=4)
    images = np.random.default_rng(0).uniform(size=(2, 16, 16, 1)).astype("float32")
    path = tmp_path_factory.mktemp("swin") / "encoder.keras"
    swin.save(path)
    return path, images, keras.ops.convert_to_numpy(swin(images))


def swin_config(config):
    assert config["registered_name"] == "kmedssl>SwinTransformer"
    return config["config"]


def test_a_saved_swin_passes_the_checks_and_loads(swin_file):
    path, images, tokens = swin_file
    checkpoints.check_model_file(path)
    loaded = checkpoints.load_model_file(path)
    assert isinstance(loaded, SwinTransformer) and loaded.depths == (2, 1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(images)), tokens, atol=1e-6)


@pytest.mark.parametrize("change, fragments", [
    ({"window_size": 3}, ["invalid SwinTransformer config", "window_size=3"]),  # an 8 x 8 grid in 3 x 3 windows
    ({"depths": [2]}, ["invalid SwinTransformer config", "depths=[2]"]),  # one depth for two head counts
    ({"depths": [2, 100000]}, ["declares a model of", "weights file holds only"]),  # ~10^8 weights
    ({"image_size": 2**16}, ["invalid SwinTransformer config", "window masks"]),  # a 32768^2 grid: 68 GB of masks
])
def test_a_tampered_swin_is_refused_with_one_line_before_building(swin_file, tmp_path, change, fragments):
    path = rewrite_encoder(swin_file[0], tmp_path / "encoder.keras", lambda config: swin_config(config).update(change))
    with pytest.raises(CheckpointError) as error:
        checkpoints.load_model_file(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message and all(f in message for f in fragments), message


# === Skipped non-finite steps ===


def skipped_steps(run):
    return [int(row["skipped_steps"]) for row in csv.DictReader((run / runs.LOG_FILE).open())]


@pytest.mark.backend_free
def test_a_new_run_skips_a_non_finite_step_under_the_progress_bar(tiny_run):
    assert "skipped_steps:" in tiny_run.output and "1 non-finite steps skipped" in tiny_run.output, tiny_run.output
    assert skipped_steps(tiny_run.path) == [1]


@pytest.mark.backend_free
def test_a_stopped_run_resumes_with_skip_as_documented(monkeypatch, tmp_path):
    poison_step_2(monkeypatch)
    run = tmp_path / "run"
    exit_code, output = invoke("pretrain", "spcl", *TINY, "--checkpoint-every", "1", "--output", run)
    assert_one_line_error(exit_code, output, "Non-finite loss at epoch 1, step 2 of the epoch", exit_codes=(1,))
    assert [step for step, _ in checkpoints.list_checkpoints(run)] == [1]
    exit_code, output = invoke("pretrain", "spcl", *TINY, "--checkpoint-every", "1", "--output", run, "--resume",
                               "--set", "on_nonfinite=skip")
    assert exit_code == 0 and f"Resumed {run} at step 1" in output, output
    assert "skipped_steps:" in output and "1 non-finite steps skipped" in output, output
    assert skipped_steps(run) == [1]


class SlowSteps(keras.callbacks.Callback):
    """Makes every step outlast the progress bar's 0.05 s refresh interval, so that every step is displayed."""

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.06)


def test_a_skipped_step_reaches_the_progress_bar_as_numbers(tmp_path, capsys):
    # On every backend. The bar averages the logs it displays with NumPy: a tensor left in them by the guard
    # (torch) breaks it. Step 5 of the tiny model's 6 is poisoned.
    poisoned = int(tiny_data().order(0)[4 * BATCH])
    rows = loop.train(tiny_model(), tiny_data(poisoned=poisoned), tmp_path, 1, STEPS, on_nonfinite="skip",
                          callbacks=[SlowSteps()], verbose=1)
    assert rows[0]["skipped_steps"] == 1 and np.isfinite(rows[0]["loss"])
    assert "skipped_steps: 1" in capsys.readouterr().out
