"""``kmedssl pretrain --devices 2`` as a user runs it (issue 7; docs/distributed.md): a new run and its resume
on the active backend's engine, in subprocesses (JAX's host devices, TensorFlow's CPU split and torchrun's
processes are fixed at start-up). Only the main process writes the run directory and prints the summary."""

import json
import os
import subprocess
import sys

import keras
import pytest
from click.testing import CliRunner

from kmedssl.cli import main

BACKEND = keras.backend.backend()
TINY_SPCL = ["--steps-per-epoch", "2", "--batch-size", "4", "--image-size", "32", "--set", "patch_size=8",
             "--set", "data_size=40"]
ENGINES = {"jax": "jax keras.distribution.DataParallel over 2 devices",
           "tensorflow": "tensorflow MirroredStrategy over 2 CPU devices",
           "torch": "torch DDP over 2 CPU processes (gloo)"}


def pretrain_command(*args):
    cli = ["-m", "kmedssl.cli", "pretrain", "spcl", "--backend", BACKEND, "--devices", "2", *TINY_SPCL, *args]
    if BACKEND == "torch":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *cli]
    return [sys.executable, *cli]


def run(*args):
    env = {key: value for key, value in os.environ.items() if key not in ("XLA_FLAGS", "WORLD_SIZE", "TF_CONFIG")}
    result = subprocess.run(pretrain_command(*args), capture_output=True, text=True, timeout=600,
                            env={**env, "KERAS_BACKEND": BACKEND, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def test_pretrain_and_resume_on_two_devices(tmp_path):
    run_dir = tmp_path / "run"
    output = run("--epochs", "1", "--output", str(run_dir))
    assert output.count("Run written to") == 1  # the main process only
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["devices"] == ENGINES[BACKEND]
    assert (run_dir / "encoder.keras").is_file()
    assert len((run_dir / "training_log.csv").read_text().splitlines()) == 2  # header + epoch 1

    # The same command plus --resume: every process reads the finished run's newest checkpoint (step 2) and
    # restores it; the main process records the resume, the log keeps its one epoch.
    output = run("--epochs", "1", "--output", str(run_dir), "--resume")
    assert output.count("Resumed") == 1 and "at step 2" in output
    assert len((run_dir / "training_log.csv").read_text().splitlines()) == 2


@pytest.mark.skipif(BACKEND != "torch", reason="torch needs one process per device")
def test_torch_without_torchrun_says_how_to_launch(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    result = CliRunner().invoke(main, ["pretrain", "spcl", "--devices", "2"])
    assert result.exit_code == 1
    assert "Error: Expected a torchrun launch for devices=2 on torch" in result.output
    assert "torchrun --nproc_per_node 2 -m kmedssl.cli pretrain" in result.output


def test_every_process_skipped_item_reaches_the_main_process_list(tmp_path):
    """Each process loads only its rows of a batch, so each meets only some of the bad images; the main
    process's data_skipped.csv lists all of them (gathered)."""
    from tests.reliability.test_bad_data import BAD_IMAGES, bad_folder, skipped_rows

    root, refused = bad_folder(tmp_path)  # 3 good images + 5 bad ones: the epoch's 2 batches of 4 load all 8
    run_dir = tmp_path / "run"
    run("--epochs", "1", "--data", str(root), "--on-error", "skip", "--output", str(run_dir))
    listed = [row["file"] for row in skipped_rows(run_dir)]
    assert sorted(f for f in listed if f != str(root / "labels.csv")) == sorted(str(root / "img" / name)
                                                                                 for name in BAD_IMAGES)
    assert listed.count(str(root / "labels.csv")) == len(refused)
