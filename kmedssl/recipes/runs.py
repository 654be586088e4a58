"""Run directories (SPEC §8): resolved recipe (TOML), environment (JSON), training log, final encoder."""

import csv
import dataclasses
import datetime
import json
import math
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
ENCODER_FILE = "encoder.keras"
REPORTS_DIR = "reports"
SKIPPED_FILE = "data_skipped.csv"


def default_run_dir(method):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return pathlib.Path("runs") / f"{method}-{stamp}"


def prepare_run_dir(path, overwrite=False):
    """Create the run directory; an existing non-empty one is never silently reused.

    Raises:
        FileExistsError: ``path`` exists and is not empty, and ``overwrite`` is False.
    """
    path = pathlib.Path(path)
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"Run directory {path} already exists and is not empty. Choose another --output, or pass "
                f"--overwrite (overwrite=True) to replace it."
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


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
    (pathlib.Path(path) / RECIPE_FILE).write_text("\n".join(lines) + "\n")


def read_recipe(run_dir):
    """The resolved recipe of a run as a dict (``method``, ``seed`` and every field)."""
    path = pathlib.Path(run_dir) / RECIPE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run_dir} is not a kmedssl run directory")
    with open(path, "rb") as f:
        return tomllib.load(f)


def write_skipped(path, skipped):
    """List every skipped data item (file, problem) in ``data_skipped.csv``; nothing is written when none."""
    if skipped:
        with open(pathlib.Path(path) / SKIPPED_FILE, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file", "problem"])
            writer.writerows(skipped)


def write_environment(path, seed, command=None, **extra):
    from kmedssl import __version__
    from kmedssl.ops.runtime import device_description

    environment = {
        "kmedssl": __version__,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "device": device_description(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "seed": int(seed),
        "command": command if command is not None else sys.argv,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        **extra,
    }
    (pathlib.Path(path) / ENVIRONMENT_FILE).write_text(json.dumps(environment, indent=2) + "\n")
