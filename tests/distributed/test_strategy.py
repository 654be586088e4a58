"""``data_parallel``'s arguments and errors, each process loading only its rows (``EpochBatches.process_rows``),
and the one-device layout of ``kmedssl.distributed`` (issue 7; docs/distributed.md). In-process: the
multi-device runs are in test_equivalence.py."""

import keras
import numpy as np
import pytest

from kmedssl.distributed import (
    all_gather,
    all_reduce_mean,
    batch_groups,
    metric_mean,
    replica_count,
    replica_index,
    replica_rows,
    replica_uniform,
    scale_loss,
)
from kmedssl.data.pipeline import ViewDataset
from kmedssl.distributed.strategy import data_parallel
from kmedssl.losses import jaccard_supcon, multiview_infonce, nt_xent, tsp_infonce
from tests.helpers import assert_close, to_numpy

BACKEND = keras.backend.backend()


@pytest.fixture(autouse=True)
def _one_process(monkeypatch):
    """No torchrun, TF_CONFIG or multi-process JAX in the environment."""
    for name in ("WORLD_SIZE", "TF_CONFIG", "KERAS_DISTRIBUTION_NUM_PROCESSES"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("devices", [None, 1])
def test_one_device_needs_no_engine(devices):
    assert data_parallel(devices) is None


@pytest.mark.parametrize("devices", [0, -2, True, 2.0, "2"])
def test_devices_must_be_a_positive_int(devices):
    with pytest.raises(ValueError, match="Expected devices to be an int >= 1"):
        data_parallel(devices)


@pytest.mark.skipif(BACKEND != "torch", reason="torch engine")
def test_torch_needs_torchrun_for_several_devices():
    with pytest.raises(ValueError, match="torchrun"):
        data_parallel(2)


@pytest.mark.skipif(BACKEND != "jax", reason="jax engine")
def test_jax_needs_enough_devices_and_says_how_to_get_them_on_cpu():
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count"):
        data_parallel(len(keras.distribution.list_devices()) + 1)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tensorflow engine")
def test_tensorflow_cannot_split_the_cpu_once_started():
    import tensorflow as tf

    devices = len(tf.config.list_logical_devices("CPU")) + len(tf.config.list_logical_devices("GPU")) + 1
    with pytest.raises(ValueError, match="Expected"):  # the runtime is up: too few GPUs, or a CPU split too late
        data_parallel(devices)


@pytest.mark.parametrize("rank", [0, 1])
def test_process_rows_load_exactly_each_ranks_rows_of_every_batch_and_only_those(rank):
    loaded = []

    def load(sample):
        loaded.append(sample)
        return {"image": np.full((2, 2), sample, "float32")}

    def views(arrays, rng):  # random per-sample views, keyed by (seed, epoch, sample)
        return {"image": arrays["image"] + rng.random()}

    dataset = ViewDataset(list(range(16)), load, views=views, batch_size=4, seed=3)
    whole = dataset.epoch_batches(epoch=1, start=1)
    shard = whole.process_rows(rank, 2)
    assert len(shard) == len(whole) == 3
    for index in range(3):
        loaded.clear()
        rows = shard[index]["image"]
        assert len(loaded) == 2  # this rank's samples only
        np.testing.assert_array_equal(rows, whole[index]["image"][2 * rank:2 * rank + 2])  # rows [r b, (r+1) b)


def test_one_device_layout_is_one_replica_and_one_group():
    assert replica_count() == 1
    assert int(replica_index()) == 0
    assert batch_groups() == 1


def test_collectives_are_the_identity_on_one_device():
    x = keras.ops.convert_to_tensor(np.arange(6, dtype="float32").reshape(3, 2))
    loss = keras.ops.convert_to_tensor(np.float32(2.5))
    for fn in (all_gather, all_reduce_mean, metric_mean, replica_rows):
        assert_close(fn(x), to_numpy(x), rtol=0, atol=0)
    assert_close(scale_loss(loss), 2.5, rtol=0, atol=0)


def test_replica_uniform_on_one_replica_is_keras_uniform():
    expected = keras.random.uniform((4, 3), minval=-1.0, maxval=2.0, seed=keras.random.SeedGenerator(7))
    actual = replica_uniform((4, 3), minval=-1.0, maxval=2.0, seed=keras.random.SeedGenerator(7))
    assert tuple(actual.shape) == (4, 3)
    assert_close(actual, to_numpy(expected), rtol=0, atol=0)


@pytest.mark.parametrize("loss_fn", [nt_xent, multiview_infonce, tsp_infonce])
def test_paired_losses_reject_an_unknown_gather(loss_fn):
    z = keras.ops.ones((2, 4))
    with pytest.raises(ValueError, match="Expected gather in"):
        loss_fn(z, z, gather="bogus")


def test_jaccard_supcon_rejects_an_unknown_gather():
    with pytest.raises(ValueError, match="Expected gather in"):
        jaccard_supcon(keras.ops.ones((2, 2, 4)), keras.ops.ones((2, 3)), gather="bogus")
