"""Run directories (SPEC §8): resolved recipe (TOML), environment (JSON), training log (CSV and JSON lines),
checkpoints, final encoder and reports.

Layout of a run directory::

    recipe.toml          the resolved recipe: method, seed and every recipe field
    environment.json     versions, backend, device, seed, command line, data; one entry per resume
    training_log.csv     one row per finished epoch: epoch, step, every logged value
    training_log.jsonl   the same rows as JSON objects (NaN written as null)
    checkpoints/         step-NNNNNNNN.npz, the last K training states (``kmedssl.recipes.checkpoints``)
    encoder.keras        the final encoder (``keras.saving``), written when training ends
    data_skipped.csv     data items skipped under on_error="skip" (only when there are any)
    reports/             evaluation reports and plots (``kmedssl evaluate``)

Every file is written atomically (``atomic_write``: a temporary file in the same folder, flushed and
fsync-ed, then renamed over the target), so a run killed at any moment leaves each file either in its
previous or in its new complete state.
"""

import csv
import dataclasses
import datetime
import io
import json
import math
import os
import pathlib
import platform
import shutil
import sys
import tomllib

import keras
import numpy as np

RECIPE_FILE = "recipe.toml"
ENVIRONMENT_FILE = "environment.json"
LOG_FILE = "training_log.csv"
LOG_JSON_FILE = "training_log.jsonl"
CHECKPOINT_DIR = "checkpoints"
ENCODER_FILE = "encoder.keras"
REPORTS_DIR = "reports"
SKIPPED_FILE = "data_skipped.csv"
TEMPORARY_MARK = ".tmp-"


def default_run_dir(method):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return pathlib.Path("runs") / f"{method}-{stamp}"


# === Atomic files ===


def temporary_path(path, suffix=""):
    """A hidden sibling of ``path`` for writing before the rename (``suffix`` keeps a required extension)."""
    path = pathlib.Path(path)
    return path.with_name(f".{path.name}{TEMPORARY_MARK}{os.getpid()}{suffix}")


def commit(temporary, path):
    """fsync ``temporary``, rename it over ``path`` and fsync the folder, so the rename survives a crash."""
    with open(temporary, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    folder = os.open(pathlib.Path(path).parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def atomic_write(path, data):
    """Write ``data`` (bytes or str) to ``path`` atomically: readers see the old file or the whole new one."""
    path = pathlib.Path(path)
    temporary = temporary_path(path)
    with open(temporary, "wb") as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)
    commit(temporary, path)
    return path


def remove_temporary_files(folder):
    """Delete the leftovers of writes interrupted before their rename (a killed run)."""
    folder = pathlib.Path(folder)
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name.startswith(".") and TEMPORARY_MARK in path.name:
                path.unlink(missing_ok=True)


# === The directory ===


def prepare_run_dir(path, overwrite=False):
    """Create the run directory; an existing non-empty one is never silently reused.

    Raises:
        FileExistsError: ``path`` exists and is not empty, and ``overwrite`` is False.
    """
    path = pathlib.Path(path)
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"Run directory {path} already exists and is not empty. Continue it with --resume "
                f"(resume=True), replace it with --overwrite (overwrite=True), or choose another --output."
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def existing_run(path, overwrite=False, resume=False):
    """Whether ``path`` holds a run to resume; checks, without writing, that the run may start there.

    With ``resume``, a missing or empty directory means a new run (so the same command can be repeated
    after any interruption); an existing one must be a kmedssl run directory.

    Raises:
        ValueError: both ``overwrite`` and ``resume``.
        FileNotFoundError: ``resume`` into a non-empty directory without ``recipe.toml``.
        FileExistsError: an existing non-empty directory without ``resume`` or ``overwrite``.
    """
    if overwrite and resume:
        raise ValueError("Expected at most one of --resume (resume=True) and --overwrite (overwrite=True). "
                         "Received: both")
    path = pathlib.Path(path)
    occupied = path.is_dir() and any(path.iterdir())
    if occupied and resume and not (path / RECIPE_FILE).is_file():
        raise FileNotFoundError(f"{path / RECIPE_FILE} not found: {path} is not a kmedssl run directory, so there "
                                f"is nothing to resume")
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} is a file. Expected a run directory for --output")
    if occupied and not (resume or overwrite):
        raise FileExistsError(
            f"Run directory {path} already exists and is not empty. Continue it with --resume (resume=True), "
            f"replace it with --overwrite (overwrite=True), or choose another --output."
        )
    return occupied and resume


# === Recipe ===


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else f"{'-' if value < 0 else ''}inf")
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_recipe(path, recipe, seed):
    """Write the resolved recipe as TOML (fields that are None are left out: TOML has no null)."""
    lines = ["# kmedssl resolved recipe", f'method = "{recipe.method}"', f'data_kind = "{recipe.data_kind}"',
             f"seed = {int(seed)}", ""]
    lines += [f"{key} = {toml_value(value)}" for key, value in dataclasses.asdict(recipe).items() if value is not None]
    atomic_write(pathlib.Path(path) / RECIPE_FILE, "\n".join(lines) + "\n")


def read_recipe(run_dir):
    """The resolved recipe of a run as a dict (``method``, ``seed`` and every field)."""
    path = pathlib.Path(run_dir) / RECIPE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a kmedssl run directory")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable recipe ({error}); the run directory is damaged") from None


# === Environment ===


def environment_entry(command=None):
    """Where and how this process runs: command line, start time, versions, backend and device."""
    from kmedssl import __version__
    from kmedssl.ops.runtime import device_description

    return {
        "command": command if command is not None else sys.argv,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "kmedssl": __version__,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "device": device_description(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
    }


def write_environment(path, seed, command=None, **extra):
    """``environment.json``: ``environment_entry`` plus the seed and ``extra`` (data, format, run options)."""
    environment = {**environment_entry(command), "seed": int(seed), **extra}
    atomic_write(pathlib.Path(path) / ENVIRONMENT_FILE, json.dumps(environment, indent=2) + "\n")


def read_environment(run_dir):
    path = pathlib.Path(run_dir) / ENVIRONMENT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a complete kmedssl run directory")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not readable JSON ({error}); the run directory is damaged") from None


def record_resume(run_dir, step, command=None, **extra):
    """Append this process (resuming at ``step``) to the ``resumes`` list of ``environment.json``."""
    environment = read_environment(run_dir)
    environment.setdefault("resumes", []).append({**environment_entry(command), "from_step": int(step), **extra})
    atomic_write(pathlib.Path(run_dir) / ENVIRONMENT_FILE, json.dumps(environment, indent=2) + "\n")


# === Training log ===


def write_log(run_dir, rows):
    """Rewrite ``training_log.csv`` and ``training_log.jsonl`` from ``rows`` (one dict per finished epoch).

    Columns: ``epoch``, ``step``, then every other key in sorted order; floats are written with ``repr``
    (exact), NaN as ``nan`` in the CSV and ``null`` in the JSON lines.
    """
    keys = sorted({key for row in rows for key in row} - {"epoch", "step"})
    columns = ["epoch", "step", *keys]
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([log_text(row.get(key, "")) for key in columns])
    lines = [json.dumps({key: log_json(row[key]) for key in columns if key in row}) for row in rows]
    atomic_write(pathlib.Path(run_dir) / LOG_FILE, table.getvalue())
    atomic_write(pathlib.Path(run_dir) / LOG_JSON_FILE, "".join(line + "\n" for line in lines))


def log_text(value):
    return repr(value) if isinstance(value, float) else str(value)


def log_json(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


# === Outputs ===


def save_model_file(model, path):
    """``keras.saving.save_model`` to ``path`` (a ``.keras`` file), atomically."""
    path = pathlib.Path(path)
    temporary = temporary_path(path, suffix=".keras")
    keras.saving.save_model(model, temporary)
    commit(temporary, path)
    return path


def write_skipped(path, skipped):
    """List every skipped data item (file, problem) in ``data_skipped.csv``; nothing is written when none."""
    if skipped:
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(["file", "problem"])
        writer.writerows(skipped)
        atomic_write(pathlib.Path(path) / SKIPPED_FILE, table.getvalue())
