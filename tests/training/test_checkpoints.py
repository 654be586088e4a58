"""Checkpoints and the non-finite loss guard (SPEC §8), on a tiny Keras model that compiles in a second.

The model has a Dropout layer (a SeedGenerator), Adam (moments and iterations) and a Mean loss tracker, so a
checkpoint that misses any of those states breaks the exact-resume checks below.
"""

import json
import os
import pathlib
import shutil
import zipfile

import keras
import numpy as np
import pytest

from kmedssl.data.pipeline import ViewDataset
from kmedssl.training import checkpoints, loop, runs
from kmedssl.training.callbacks import NonFiniteLossError
from kmedssl.training.checkpoints import CheckpointError

SAMPLES, BATCH, EPOCHS = 24, 4, 2
STEPS = SAMPLES // BATCH  # 6 batches per epoch


def tiny_model():
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(8, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(1))(inputs)
    hidden = keras.layers.Dropout(0.25, seed=2)(hidden)
    outputs = keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(3))(hidden)
    model = keras.Model({"x": inputs}, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def tiny_data(poisoned=None):
    """24 samples x -> sum(x); sample ``poisoned`` is all NaN."""

    def load(index):
        x = np.random.default_rng(index).normal(size=4).astype("float32")
        if index == poisoned:
            x[:] = np.nan
        return {"x": x, "y": np.float32([x.sum()])}

    return ViewDataset(list(range(SAMPLES)), load, batch_size=BATCH, target="y", seed=0)


def second_batch_sample():
    """A sample of batch 1 (the second) of epoch 0: poisoning it makes step 2 of the run non-finite."""
    return int(tiny_data().order(0)[BATCH + 1])


def state(checkpoint):
    return [array for group in checkpoints.GROUPS for array in checkpoint.arrays[group]]


def assert_same_state(a, b):
    assert len(state(a)) == len(state(b))
    for x, y in zip(state(a), state(b), strict=True):
        assert x.dtype == y.dtype and np.array_equal(x, y)


def newest(run_dir):
    return checkpoints.load_checkpoint(checkpoints.latest_checkpoint(run_dir))


def iterations(checkpoint):
    """The optimizer's update count stored in ``checkpoint``."""
    paths = [spec["path"] for spec in checkpoint.meta["variables"]["optimizer"]]
    return int(checkpoint.arrays["optimizer"][next(i for i, p in enumerate(paths) if p.endswith("/iteration"))])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run (2 epochs x 6 steps, a checkpoint after every step, all kept) and its model."""
    run_dir = tmp_path_factory.mktemp("reference")
    model = tiny_model()
    loop.train(model, tiny_data(), run_dir, EPOCHS, STEPS, checkpoint_every=1, keep_checkpoints=0, verbose=0)
    return run_dir, model


def built_model():
    """A new ``tiny_model`` with its variables and optimizer created (no training, no compilation)."""
    model = tiny_model()
    loop.build_training_state(model, tiny_data().batch(0, 0))
    return model


def copied_checkpoint(reference, step, folder):
    """A copy of the reference run's checkpoint after ``step`` steps, in ``folder/checkpoints``."""
    (folder / "checkpoints").mkdir(parents=True)
    return pathlib.Path(shutil.copy(reference[0] / "checkpoints" / f"step-{step:08d}.npz", folder / "checkpoints"))


# === Contents and exact resume ===


def test_a_checkpoint_holds_the_whole_training_state(reference):
    run_dir, model = reference
    assert [step for step, _ in checkpoints.list_checkpoints(run_dir)] == list(range(1, EPOCHS * STEPS + 1))
    mid, boundary, last = (checkpoints.load_checkpoint(run_dir / "checkpoints" / f"step-{step:08d}.npz")
                           for step in (4, 6, 12))
    assert [(c.epoch, c.batch, c.step) for c in (mid, boundary, last)] == [(0, 4, 4), (1, 0, 6), (2, 0, 12)]
    variables = checkpoints.state_variables(model)
    assert any("seed_generator" in v.path for v in variables["model"])  # the Dropout's random state
    for group in checkpoints.GROUPS:
        assert len(last.arrays[group]) == len(variables[group]) > 0
        for variable, array in zip(variables[group], last.arrays[group]):
            assert np.array_equal(np.asarray(keras.ops.convert_to_numpy(variable.value)), array), variable.path
    assert iterations(mid) == 4 and iterations(last) == 12
    assert mid.meta["history"] == [] and [row["epoch"] for row in boundary.meta["history"]] == [1]


@pytest.mark.parametrize("resume_step", [3, 6, 8])  # mid-epoch 1, the epoch boundary, mid-epoch 2
def test_resuming_from_any_checkpoint_reproduces_the_uninterrupted_run(resume_step, reference, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(reference[0], resumed)
    for step, path in checkpoints.list_checkpoints(resumed):
        if step > resume_step:
            path.unlink()  # as if killed right after checkpoint `resume_step`; the log files stay ahead
    start = newest(resumed)
    rows = loop.train(tiny_model(), tiny_data(), resumed, EPOCHS, STEPS, start=start, checkpoint_every=1,
                          keep_checkpoints=0, verbose=0)
    assert_same_state(newest(reference[0]), newest(resumed))
    for name in (runs.LOG_FILE, runs.LOG_JSON_FILE):
        assert (resumed / name).read_bytes() == (reference[0] / name).read_bytes()
    assert [row["epoch"] for row in rows] == [1, 2]


# === Files: atomic, pruned, refused when damaged ===


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    model = built_model()
    path = checkpoints.save_checkpoint(tmp_path, model, 1, 0, 6)
    before = path.read_bytes()

    def crash(source, target):
        raise OSError("killed before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="killed before the rename"):
        checkpoints.save_checkpoint(tmp_path, model, 1, 0, 6)
    monkeypatch.undo()
    assert path.read_bytes() == before
    leftovers = [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    assert leftovers and [step for step, _ in checkpoints.list_checkpoints(tmp_path)] == [6]
    runs.remove_temporary_files(tmp_path / "checkpoints")
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000006.npz"]


def test_only_the_newest_checkpoints_are_kept(reference, tmp_path):
    shutil.copytree(reference[0] / "checkpoints", tmp_path / "checkpoints")
    checkpoints.prune_checkpoints(tmp_path, 0)
    assert len(checkpoints.list_checkpoints(tmp_path)) == EPOCHS * STEPS
    checkpoints.prune_checkpoints(tmp_path, 3)
    assert [step for step, _ in checkpoints.list_checkpoints(tmp_path)] == [10, 11, 12]


def test_truncated_checkpoint_is_refused_with_a_clear_error(reference, tmp_path):
    path = copied_checkpoint(reference, 6, tmp_path)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(CheckpointError, match=f"{path.name}: unreadable checkpoint, truncated"):
        checkpoints.load_checkpoint(path)


def rewrite_archive(path, change):
    """Rewrite the .npz at ``path`` with ``change(members)`` applied (members: name -> array)."""
    with np.load(path, allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    change(members)
    with open(path, "wb") as handle:
        np.savez(handle, **members)


def test_tampered_checkpoints_are_refused_without_unpickling(reference, tmp_path):
    path = copied_checkpoint(reference, 6, tmp_path)
    original = path.read_bytes()

    class Payload:
        def __reduce__(self):
            return (pathlib.Path.touch, (tmp_path / "pwned",))

    rewrite_archive(path, lambda m: m.update({"model/00000": np.array([Payload()], dtype=object)}))
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        checkpoints.load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()

    def other_format(members):
        meta = json.loads(bytes(members["meta"]).decode())
        members["meta"] = np.frombuffer(json.dumps({**meta, "format": "other"}).encode(), dtype=np.uint8)

    path.write_bytes(original)
    rewrite_archive(path, other_format)
    with pytest.raises(CheckpointError, match="not a kmedssl checkpoint"):
        checkpoints.load_checkpoint(path)

    path.write_bytes(original)
    rewrite_archive(path, lambda m: m.update({"model/00000": np.zeros((3, 3), "float32")}))
    with pytest.raises(CheckpointError, match=r"model/00000 .* wrong shape or type; the file was tampered with"):
        checkpoints.load_checkpoint(path)


def test_a_checkpoint_of_another_model_is_refused(reference):
    inputs = keras.Input((4,), name="x")
    other = keras.Model({"x": inputs}, keras.layers.Dense(2)(inputs))
    other.compile(optimizer=keras.optimizers.Adam(), loss="mse")
    loop.build_training_state(other, tiny_data().batch(0, 0))
    with pytest.raises(CheckpointError, match="written for a different model"):
        checkpoints.restore_checkpoint(other, newest(reference[0]))


def test_a_non_finite_state_is_never_checkpointed(tmp_path):
    model = built_model()
    kernel = model.layers[1].kernel
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    with pytest.raises(NonFiniteLossError, match=f"Non-finite values in {kernel.path}"):
        checkpoints.save_checkpoint(tmp_path, model, 1, 0, 7)
    assert checkpoints.list_checkpoints(tmp_path) == []


def test_damaged_saved_models_are_refused_in_safe_mode(tmp_path):
    inputs = keras.Input((4,))
    path = tmp_path / "encoder.keras"
    runs.save_model_file(keras.Model(inputs, keras.layers.Dense(2)(inputs)), path)
    assert isinstance(checkpoints.load_model_file(path), keras.Model)

    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated.keras: not a complete .keras archive"):
        checkpoints.load_model_file(truncated)

    tampered = tmp_path / "tampered.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(tampered, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                layer = config["config"]["layers"][-1]
                layer.update(class_name="Lambda", module="keras.layers", registered_name=None,
                             config={"name": layer["config"]["name"], "function": {
                                 "class_name": "__lambda__", "config": {"code": "print", "defaults": None,
                                                                        "closure": None}}})
                data = json.dumps(config).encode()
            target.writestr(item, data)
    with pytest.raises(CheckpointError, match="tampered.keras: cannot be loaded safely"):
        checkpoints.load_model_file(tampered)


# === Non-finite losses ===


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    model = tiny_model()
    with pytest.raises(NonFiniteLossError, match=r"Non-finite loss at epoch 1, step 2 of the epoch: loss=nan"):
        loop.train(model, tiny_data(poisoned=second_batch_sample()), tmp_path, EPOCHS, STEPS,
                       checkpoint_every=1, verbose=0)
    assert [step for step, _ in checkpoints.list_checkpoints(tmp_path)] == [1]
    last = newest(tmp_path)
    assert all(np.all(np.isfinite(a)) for a in state(last) if np.issubdtype(a.dtype, np.floating))
    assert (tmp_path / runs.LOG_FILE).read_text().splitlines() == ["epoch,step"]


def test_non_finite_steps_can_be_skipped_without_a_trace(tmp_path):
    poisoned = second_batch_sample()
    rows = loop.train(tiny_model(), tiny_data(poisoned=poisoned), tmp_path, EPOCHS, STEPS, checkpoint_every=1,
                          keep_checkpoints=0, on_nonfinite="skip", verbose=0)
    # The poisoned sample is in one batch of each epoch: one skipped step per epoch, counted in the log.
    assert [row["skipped_steps"] for row in rows] == [1, 2]
    assert all(np.isfinite(row["loss"]) for row in rows)
    log = (tmp_path / runs.LOG_FILE).read_text().splitlines()
    assert log[0] == "epoch,step,loss,skipped_steps" and log[2].split(",")[-1] == "2"
    found = dict((step, path) for step, path in checkpoints.list_checkpoints(tmp_path))
    before, after = checkpoints.load_checkpoint(found[1]), checkpoints.load_checkpoint(found[2])
    assert_same_state(before, after)  # step 2 was skipped: it left no trace in weights, optimizer or metrics
    assert after.meta["skipped_steps"] == 1
    assert iterations(newest(tmp_path)) == EPOCHS * STEPS - 2  # the two skipped updates were never applied


@pytest.mark.backend_free
def test_run_options_accept_set_strings_and_reject_bad_values():
    assert loop.run_options("5", "0", "skip") == {"checkpoint_every": 5, "keep_checkpoints": 0,
                                                      "on_nonfinite": "skip"}
    assert loop.run_options("none")["checkpoint_every"] is None
    with pytest.raises(ValueError, match="Expected checkpoint_every to be an integer. Received: checkpoint_every='x'"):
        loop.run_options("x")
    with pytest.raises(ValueError, match=r"keep_checkpoints >= 0. Received: checkpoint_every=None, keep_checkpoints=-1"):
        loop.run_options(None, -1)
    with pytest.raises(ValueError, match=r"Expected on_nonfinite in \('stop', 'skip'\)"):
        loop.run_options(None, 3, "ignore")
