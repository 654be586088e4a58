"""Data-parallel training on 2 CPU devices equals one device (issue 7; docs/distributed.md, "Tests").

Each backend's pass checks its own engine: JAX ``keras.distribution.DataParallel`` over 2 XLA host devices,
TensorFlow ``MirroredStrategy`` over 2 logical CPUs, torch DDP over 2 gloo processes under torchrun. Every
engine fixes its devices at start-up, so ``worker.py`` runs in subprocesses, once per module: ``single`` (the
references) and the engine, each running every case (see worker.py).

- ``gather="global"``: one step on 2 replicas gives the loss and updated weights of one step on one device
  with the concatenated batch.
- ``gather="local"``: it gives those of the per-replica computation (mean over the replicas of the loss of
  each replica's rows, on one device).
- ACE (2 steps): the same loss, student, teacher and centre as one device; on torch the two processes hold
  identical weights, teacher and centre.

Weights are compared within a tolerance tied to the size of the step's update: for every weight tensor,
``max |w_engine - w_single| <= 1e-4 max |w_single - w_init| + 1e-6``.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
WORKER = Path(__file__).with_name("worker.py")
ROOT = WORKER.parents[2]
METHODS, GATHERS = ("mvcon", "simclr", "simclr_resnet", "spcl", "mulsupcon"), ("global", "local")
TIMEOUT_S = 600
STDERR_TAIL = 4000


def engine_command(out_dir):
    if BACKEND == "torch":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                str(WORKER), "torch", str(out_dir)]
    return [sys.executable, str(WORKER), BACKEND, str(out_dir)]


def run_workers(commands, logs):
    """Run ``commands`` (name -> argv) concurrently; fail with a process's stderr tail if it does not succeed."""
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "OMP_NUM_THREADS": "1"}
    processes = {}
    for name, command in commands.items():
        with open(logs / f"{name}.log", "wb") as log:
            processes[name] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True)  # own group: torchrun's ranks end with it
    failures = []
    for name, process in processes.items():
        try:
            outcome = f"exited with {process.wait(timeout=TIMEOUT_S)}"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            outcome = f"timed out after {TIMEOUT_S} s"
        if process.returncode != 0:
            tail = (logs / f"{name}.log").read_text(errors="replace")[-STDERR_TAIL:]
            failures.append(f"`{' '.join(commands[name])}` {outcome}; its output ends with:\n{tail}")
    assert not failures, "\n\n".join(failures)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Output directories of the single-device references and of the engine (both run once per module)."""
    root = tmp_path_factory.mktemp("distributed")
    dirs = {"single": root / "single", "engine": root / "engine"}
    run_workers({"single": [sys.executable, str(WORKER), "single", str(dirs["single"])],
                 "engine": engine_command(dirs["engine"])}, root)
    return dirs


def load(directory, name):
    with np.load(directory / f"{name}.npz") as data:
        return dict(data)


def tensors(result, prefix):
    """``result[prefix 0], result[prefix 1], ...``"""
    count = 0
    while f"{prefix}{count}" in result:
        count += 1
    return [result[f"{prefix}{i}"] for i in range(count)]


def max_update(after, before):
    return max(float(np.abs(a - b).max()) for a, b in zip(after, before, strict=True))


def assert_weights_match(actual, expected, initial):
    """Every tensor within ``1e-4`` of its update's size (+ 1e-6) of the reference."""
    assert len(actual) == len(expected) == len(initial)
    for i, (a, e, w0) in enumerate(zip(actual, expected, initial)):
        error, update = float(np.abs(a - e).max()), float(np.abs(e - w0).max())
        assert error <= 1e-4 * update + 1e-6, f"weight {i} {e.shape}: max error {error:.3g}, update {update:.3g}"


@pytest.mark.parametrize("gather", GATHERS)
@pytest.mark.parametrize("method", METHODS)
def test_one_step_matches_single_device(runs, method, gather):
    single, engine = load(runs["single"], f"{method}-{gather}"), load(runs["engine"], f"{method}-{gather}")
    initial = tensors(single, "init")
    for a, e in zip(tensors(engine, "init"), initial, strict=True):
        np.testing.assert_array_equal(a, e)  # the same starting point
    assert max_update(tensors(single, "w"), initial) > 1e-3  # the step does train
    np.testing.assert_allclose(engine["loss"], single["loss"], rtol=1e-5)
    assert_weights_match(tensors(engine, "w"), tensors(single, "w"), initial)


@pytest.mark.parametrize("method", METHODS)
def test_gather_changes_the_step(runs, method):
    """Negative control: "global" and "local" give different steps, so the equivalences above would fail if an
    engine ignored ``gather``."""
    for directory in (runs["single"], runs["engine"]):
        global_, local = load(directory, f"{method}-global"), load(directory, f"{method}-local")
        assert abs(float(global_["loss"] - local["loss"])) > 1e-3 * abs(float(global_["loss"]))
        assert max_update(tensors(global_, "w"), tensors(local, "w")) > 1e-3


def test_ace_two_steps_match_single_device(runs):
    single, engine = load(runs["single"], "ace-rank0"), load(runs["engine"], "ace-rank0")
    assert max_update(tensors(single, "teacher"), tensors(single, "teacher_init")) > 1e-3  # the teacher moves
    assert np.abs(single["center"]).max() > 1e-3  # and so does the centre
    np.testing.assert_allclose(engine["loss"], single["loss"], rtol=1e-5)
    assert_weights_match(tensors(engine, "w"), tensors(single, "w"), tensors(single, "init"))
    assert_weights_match(tensors(engine, "teacher"), tensors(single, "teacher"), tensors(single, "teacher_init"))
    np.testing.assert_allclose(engine["center"], single["center"], rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(BACKEND != "torch", reason="one process per replica on torch only")
def test_ace_torch_processes_stay_identical(runs):
    """Each DDP process updates its own copy of the teacher (EMA) and centre (all-reduced batch statistics)
    from rows that differ across processes: after 2 steps both copies are still identical."""
    rank_0, rank_1 = load(runs["engine"], "ace-rank0"), load(runs["engine"], "ace-rank1")
    for prefix in ("w", "teacher"):
        for a, b in zip(tensors(rank_1, prefix), tensors(rank_0, prefix), strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(rank_1["center"], rank_0["center"])
    np.testing.assert_array_equal(rank_1["loss"], rank_0["loss"])
