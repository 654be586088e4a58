"""``kmedssl.recipes.pretrain`` on the phantom data (SPEC §9); every method's run and resume: test_resume.py."""

import math
import pathlib

import keras
import numpy as np
import pytest

from kmedssl import recipes
from kmedssl.recipes import runs
from kmedssl.recipes.callbacks import NonFiniteLossError, NonFiniteLossGuard

METHODS = ["ace", "mulsupcon", "mvcon", "mvmae", "simclr", "spcl", "supervised"]


def test_list_methods():
    assert recipes.list_methods() == METHODS


def test_overrides_reach_the_model(tmp_path):
    result = recipes.pretrain("spcl", epochs=1, steps_per_epoch=1, batch_size=8, mask_ratio=0.5, kappa=8.0,
                              output_dir=tmp_path / "run", verbose=0)
    assert result.model.mask_ratio == 0.5 and result.model.kappa == 8.0
    assert result.recipe.batch_size == 8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="nope"), r"Expected a method name in \['ace'"),
        (dict(name="spcl", size="huge"), "Expected size"),
        (dict(name="spcl", not_a_field=1), r"Unknown recipe field\(s\) \['not_a_field'\]"),
        (dict(name="spcl", kappa="abc"), "Expected kappa to be of type float"),
        (dict(name="spcl", image_size=62), "divisible by patch_size"),
        (dict(name="spcl", batch_size=100000), "Expected at least batch_size=100000"),
        (dict(name="spcl", backend="not-the-active-one"), "Expected backend"),
    ],
)
def test_user_mistakes_raise_value_error(kwargs, message, tmp_path):
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=message):
        recipes.pretrain(name, output_dir=tmp_path / "run", verbose=0, **kwargs)


def test_missing_data_path_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="/no/such/path: no such file"):
        recipes.pretrain("spcl", data="/no/such/path", output_dir=tmp_path / "run", verbose=0)


def test_existing_run_directory_is_not_overwritten(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="--overwrite"):
        recipes.pretrain("spcl", epochs=1, steps_per_epoch=1, batch_size=8, output_dir=tmp_path / "run", verbose=0)
    assert (tmp_path / "run" / "keep.txt").read_text() == "precious"


def test_the_non_finite_loss_guard_works_as_a_plain_keras_callback():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss=lambda y, p: keras.ops.mean(keras.ops.log(y - 2.0) + p))
    x, y = np.ones((8, 2), "float32"), np.ones((8, 1), "float32")
    with pytest.raises(NonFiniteLossError, match=r"Non-finite loss at epoch 1, step 1 of the epoch: loss=nan"):
        model.fit(x, y, batch_size=4, epochs=2, callbacks=[NonFiniteLossGuard()], verbose=0)


def test_skipped_data_items_are_listed_in_the_run_directory(tmp_path):
    from kmedssl.data.formats import read_dataset
    from kmedssl.data.phantom.writer import write_mimic_cxr

    data = write_mimic_cxr(tmp_path / "data", num_subjects=16, image_size=64, seed=0)
    records = read_dataset(data, "mimic-cxr").records
    missing, truncated = records[0].path, records[1].path
    pathlib.Path(missing).unlink()
    content = pathlib.Path(truncated).read_bytes()
    pathlib.Path(truncated).write_bytes(content[: len(content) // 3])

    with pytest.raises(ValueError, match="no such file|missing|not found"):
        recipes.pretrain("spcl", data=str(data), format="mimic-cxr", epochs=1, batch_size=8,
                         output_dir=tmp_path / "strict", verbose=0)
    result = recipes.pretrain("spcl", data=str(data), format="mimic-cxr", epochs=1, batch_size=8, on_error="skip",
                              output_dir=tmp_path / "run", verbose=0)
    listed = (result.run_dir / runs.SKIPPED_FILE).read_text()
    assert pathlib.Path(missing).name in listed  # skipped by the reader
    assert pathlib.Path(truncated).name in listed and "truncated" in listed  # skipped by the pipeline


def test_probe_monitor_logs_probe_auroc(tmp_path):
    result = recipes.pretrain("spcl", epochs=2, steps_per_epoch=1, batch_size=8, probe_every=2,
                              output_dir=tmp_path / "run", verbose=0)
    values = result.history["probe_auroc"]
    assert len(values) == 2 and math.isnan(values[0]) and 0.0 <= values[1] <= 1.0
    assert "probe_auroc" in (result.run_dir / runs.LOG_FILE).read_text().splitlines()[0]
