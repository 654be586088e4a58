"""Runs that survive (SPEC §8): every method's run directory, exact resume from a mid-epoch checkpoint, a real
SIGKILL of a training process, and the rules of ``resume``.

Exactness is checked with ``np.array_equal`` on every variable of the newest checkpoint (model, EMA teacher,
centre, step counters, trainable scales, seed generators, optimizer, running means) and byte equality of
the training logs, against an uninterrupted run of the same settings on the same backend (CPU).
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from kmedssl import recipes
from kmedssl.training import checkpoints, loop, runs
from kmedssl.recipes.registry import make_recipe

METHODS = ["ace", "mulsupcon", "mvcon", "mvmae", "simclr", "spcl", "supervised"]
VIT = dict(image_size=32, patch_size=8)
RESNET = dict(image_size=16, resnet_width=4)
TINY = {
    "ace": dict(VIT, image_cells=8, head_dim=64, head_hidden_dim=32, head_bottleneck_dim=16),
    "mulsupcon": RESNET,
    "mvcon": VIT,
    "mvmae": dict(VIT, decoder_size="phantom"),
    "simclr": RESNET,
    "spcl": VIT,
    "supervised": VIT,
}
EPOCHS, STEPS = 2, 2
COMMON = dict(epochs=EPOCHS, steps_per_epoch=STEPS, batch_size=4, data_size=40, checkpoint_every=1,
              keep_checkpoints=0, verbose=0)
RESUME_STEP = 3  # batch 1 of epoch 2: mid-epoch, after one finished epoch


def same_state(a, b):
    """Names of the variables whose values differ between checkpoints ``a`` and ``b`` (empty: identical)."""
    differ = []
    for group in checkpoints.GROUPS:
        assert len(a.arrays[group]) == len(b.arrays[group]), group
        for x, y, spec in zip(a.arrays[group], b.arrays[group], a.meta["variables"][group]):
            if x.dtype != y.dtype or not np.array_equal(x, y):
                differ.append(f"{group}: {spec['path']}")
    return differ


def newest(run_dir):
    return checkpoints.load_checkpoint(checkpoints.latest_checkpoint(run_dir))


def assert_same_run(reference, resumed):
    assert same_state(newest(reference), newest(resumed)) == []
    for name in (runs.LOG_FILE, runs.LOG_JSON_FILE):
        assert (resumed / name).read_bytes() == (reference / name).read_bytes(), name


def interrupted_copy(run_dir, target, step):
    """A copy of a finished run as a kill right after checkpoint ``step`` leaves it (later logs stay)."""
    shutil.copytree(run_dir, target)
    for found, path in checkpoints.list_checkpoints(target):
        if found > step:
            path.unlink()
    (target / runs.ENCODER_FILE).unlink()
    return checkpoints.load_checkpoint(checkpoints.latest_checkpoint(target))


@pytest.fixture(scope="module", params=METHODS)
def method_run(request, tmp_path_factory):
    """One finished tiny run per method (2 epochs x 2 steps, a checkpoint after every step)."""
    run_dir = tmp_path_factory.mktemp(request.param) / "run"
    return recipes.pretrain(request.param, output_dir=run_dir, **COMMON, **TINY[request.param])


# === Every method ===


def test_every_method_writes_a_complete_run_directory(method_run):
    run_dir, name = method_run.run_dir, method_run.recipe.method
    for file in (runs.RECIPE_FILE, runs.ENVIRONMENT_FILE, runs.LOG_FILE, runs.LOG_JSON_FILE, runs.ENCODER_FILE):
        assert (run_dir / file).is_file(), file
    assert [step for step, _ in checkpoints.list_checkpoints(run_dir)] == [1, 2, 3, 4]
    recipe = runs.read_recipe(run_dir)
    assert recipe["method"] == name and recipe["epochs"] == EPOCHS and recipe["steps_per_epoch"] == STEPS
    log = (run_dir / runs.LOG_FILE).read_text().splitlines()
    assert log[0].startswith("epoch,step,") and [line.split(",")[:2] for line in log[1:]] == [["1", "2"], ["2", "4"]]
    images = STEPS * COMMON["batch_size"] * method_run.model.images_per_sample  # a frontal/lateral pair: 2 images
    throughput = runs.read_throughput(run_dir)  # tests/training/test_throughput.py checks the figures
    assert [(row["epoch"], row["process"], row["batches"], row["images"]) for row in throughput] == \
        [(epoch, 0, STEPS, images) for epoch in (1, 2)]
    assert method_run.throughput["images"] == EPOCHS * images and method_run.throughput["step_images_per_s"] > 0
    for term in ("loss", *(f"{t}_loss" for t in method_run.model.loss_terms)):
        assert len(method_run.history[term]) == EPOCHS and all(np.isfinite(method_run.history[term])), term
    loaded = keras.saving.load_model(run_dir / runs.ENCODER_FILE)
    size = recipe["image_size"]
    images = np.random.default_rng(0).random((2, size, size, 1)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded.features(images)),
                               keras.ops.convert_to_numpy(method_run.encoder.features(images)), rtol=1e-5, atol=1e-6)


def test_every_method_continues_exactly_from_a_mid_epoch_checkpoint(method_run, tmp_path):
    """The trained model is reset to checkpoint 3 of its own run and trained on (no new compile, so this is
    cheap on every backend): a state the checkpoint missed would make the continuation diverge."""
    resumed = tmp_path / "resumed"
    start = interrupted_copy(method_run.run_dir, resumed, RESUME_STEP)
    source, splits, dataset = loop.open_training_data(method_run.recipe, "phantom", seed=0)
    loop.train(method_run.model, dataset, resumed, EPOCHS, STEPS, start=start, checkpoint_every=1,
               keep_checkpoints=0, verbose=0, callbacks=loop.run_monitors(method_run.recipe, source, splits["val"], 0))
    assert_same_run(method_run.run_dir, resumed)


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="a new model compiles again (tens of seconds per method on jax and tensorflow); there the "
                           "continuation test above and the SIGKILL test (a new process) cover resuming")
def test_every_method_resumes_exactly_in_a_new_model(method_run, tmp_path):
    resumed = tmp_path / "resumed"
    interrupted_copy(method_run.run_dir, resumed, RESUME_STEP)
    name = method_run.recipe.method
    result = recipes.pretrain(name, output_dir=resumed, resume=True, **COMMON, **TINY[name])
    assert result.resumed_from == RESUME_STEP and result.history == method_run.history
    assert_same_run(method_run.run_dir, resumed)


# === A real kill ===

KILL_RUN = ["pretrain", "spcl", "--epochs", "3", "--steps-per-epoch", "6", "--batch-size", "4", "--image-size", "32",
            "--set", "patch_size=8", "--set", "data_size=40", "--checkpoint-every", "1"]
KILL_STEPS = 6


def kmedssl_process(run_dir, *extra, log):
    """``kmedssl pretrain`` (``KILL_RUN``) in a new Python process on this test's backend."""
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    with open(log, "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "kmedssl.cli", *KILL_RUN, "--output", str(run_dir), *extra],
                                env=env, cwd=run_dir.parent, stdout=subprocess.DEVNULL, stderr=stderr)


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """An uninterrupted run, and a run SIGKILLed after its first mid-epoch checkpoint from step 2 on, then
    resumed with the same command plus ``--resume`` (three processes; the first two run side by side)."""
    root = tmp_path_factory.mktemp("kill")
    reference, killed = root / "reference", root / "killed"
    reference_process = kmedssl_process(reference, log=root / "reference.log")
    victim = kmedssl_process(killed, log=root / "killed.log")
    # The loop ends when a mid-epoch checkpoint appears, or fails when the victim exits first.
    while not any(step >= 2 and step % KILL_STEPS for step, _ in checkpoints.list_checkpoints(killed)):
        assert victim.poll() is None, "no mid-epoch checkpoint appeared: " + (root / "killed.log").read_text()[-2000:]
        time.sleep(0.002)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    killed_at = [step for step, _ in checkpoints.list_checkpoints(killed)]
    assert killed_at[-1] < 3 * KILL_STEPS and not (killed / runs.ENCODER_FILE).exists()  # it really was cut short
    assert len(killed_at) <= 3  # the newest 3 are kept (the default)
    resume = kmedssl_process(killed, "--resume", log=root / "resume.log")
    assert resume.wait(timeout=600) == 0, (root / "resume.log").read_text()[-2000:]
    assert reference_process.wait(timeout=600) == 0, (root / "reference.log").read_text()[-2000:]
    return reference, killed, killed_at


def test_a_run_killed_mid_epoch_resumes_to_the_weights_and_log_of_an_uninterrupted_run(killed_and_resumed):
    reference, killed, killed_at = killed_and_resumed
    assert_same_run(reference, killed)
    assert [step for step, _ in checkpoints.list_checkpoints(killed)] == [16, 17, 18]
    assert not [p for p in killed.rglob(".*") if runs.TEMPORARY_MARK in p.name]  # interrupted writes cleaned up
    environment = runs.read_environment(killed)
    assert [entry["from_step"] for entry in environment["resumes"]] == [killed_at[-1]]
    assert "--resume" in environment["resumes"][0]["command"]


def test_resuming_a_finished_run_changes_nothing(killed_and_resumed, tmp_path):
    reference = killed_and_resumed[0]
    finished = tmp_path / "finished"
    shutil.copytree(reference, finished)
    result = recipes.pretrain("spcl", output_dir=finished, resume=True, epochs=3, steps_per_epoch=KILL_STEPS,
                              batch_size=4, image_size=32, patch_size=8, data_size=40, checkpoint_every=1, verbose=0)
    assert result.resumed_from == 3 * KILL_STEPS and len(result.history["loss"]) == 3
    assert_same_run(reference, finished)
    final = newest(reference)
    for variable, array in zip(result.model.variables, final.arrays["model"]):
        assert np.array_equal(keras.ops.convert_to_numpy(variable.value), array), variable.path


# === Rules of resume ===


def fake_run(run_dir, **overrides):
    """A run directory's recipe and environment, as ``pretrain`` writes them before training."""
    run_dir.mkdir()
    runs.write_recipe(run_dir, make_recipe("spcl", "phantom", **{**VIT, **overrides}), seed=0)
    runs.write_environment(run_dir, 0, data="phantom", format=None, on_error="raise")
    return run_dir


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(epochs=7), r"Received: epochs=7 \(the run has 15\)"),
        (dict(seed=1), r"seed=1 \(the run has 0\)"),
        (dict(mask_ratio=0.5), r"mask_ratio=0.5 \(the run has 0.6\)"),
        (dict(data="/elsewhere"), r"data='/elsewhere' \(the run has 'phantom'\)"),
    ],
)
def test_resume_requires_the_settings_of_the_run(kwargs, message, tmp_path):
    run_dir = fake_run(tmp_path / "run")
    with pytest.raises(ValueError, match=r"Expected the settings of the run being resumed in .*" + message):
        recipes.pretrain("spcl", output_dir=run_dir, resume=True, verbose=0, **VIT, **kwargs)


def test_resume_checks_method_directory_and_flags(tmp_path):
    run_dir = fake_run(tmp_path / "run")
    with pytest.raises(ValueError, match="Expected method 'spcl', the method of the run in"):
        recipes.pretrain("mvcon", output_dir=run_dir, resume=True, verbose=0, **VIT)
    with pytest.raises(ValueError, match="Expected at most one of --resume"):
        recipes.pretrain("spcl", output_dir=run_dir, resume=True, overwrite=True, verbose=0)
    with pytest.raises(ValueError, match="Expected output_dir"):
        recipes.pretrain("spcl", resume=True, verbose=0)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not a run")
    with pytest.raises(FileNotFoundError, match="is not a kmedssl run directory, so there is nothing to resume"):
        recipes.pretrain("spcl", output_dir=tmp_path / "other", resume=True, verbose=0)
    assert runs.existing_run(tmp_path / "missing", resume=True) is False  # a new run starts there
    assert runs.existing_run(run_dir, resume=True) is True
