"""Run directories (SPEC §8): resolved recipe (TOML), environment (JSON), training log (CSV and JSON lines),
checkpoints, final encoder and reports.

Layout of a run directory::

    recipe.toml          the resolved recipe: method, seed and every recipe field
    environment.json     versions, backend, device, seed, command line, data; one entry per resume
    training_log.csv     one row per finished epoch: epoch, step, every logged value
    training_log.jsonl   the same rows as JSON objects (NaN written as null)
    throughput.csv       one row per epoch and process: the input pipeline's and the training step's images/s
    checkpoints/         step-NNNNNNNN.npz, the last K training states (``kmedssl.training.checkpoints``)
    encoder.keras        the final encoder (``keras.saving``), written when training ends
    data_skipped.csv     data items skipped under on_error="skip" (only when there are any)
    reports/             evaluation reports and plots (``kmedssl evaluate``)

Every file is written atomically (``atomic_write``: a temporary file in the same folder, flushed and
fsync-ed, then renamed over the target), so a run killed at any moment leaves each file either in its
previous or in its new complete state.

``--overwrite`` deletes only what kmedssl wrote (``check_overwrite``; docs/runs.md, "What --overwrite may
delete"), and a folder whose creation was interrupted counts as empty (``occupied``).
"""

import csv
import dataclasses
import datetime
import fnmatch
import io
import json
import math
import os
import pathlib
import platform
import re
import shutil
import sys
import tomllib

import keras
import numpy as np

RECIPE_FILE = "recipe.toml"
ENVIRONMENT_FILE = "environment.json"
LOG_FILE = "training_log.csv"
LOG_JSON_FILE = "training_log.jsonl"
THROUGHPUT_FILE = "throughput.csv"
CHECKPOINT_DIR = "checkpoints"
ENCODER_FILE = "encoder.keras"
REPORTS_DIR = "reports"
SKIPPED_FILE = "data_skipped.csv"
TEMPORARY_MARK = ".tmp-"
TEMPORARY_NAME = re.compile(r"\.(?P<target>.+)\.tmp-\d+(\.\w+)?")  # temporary_path's names
RECIPE_HEADER = "# kmedssl resolved recipe"


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


@dataclasses.dataclass(frozen=True)
class Layout:
    """What a folder kmedssl creates holds: files and folders (``fnmatch`` patterns) and the temporary files
    of those files; kmedssl knows the folder as its own by ``marker``, a file that starts with ``header``."""

    name: str
    marker: str
    header: str
    files: tuple
    folders: tuple


RUN_LAYOUT = Layout("run directory", RECIPE_FILE, RECIPE_HEADER,
                    files=(RECIPE_FILE, ENVIRONMENT_FILE, LOG_FILE, LOG_JSON_FILE, THROUGHPUT_FILE, ENCODER_FILE,
                           SKIPPED_FILE),
                    folders=(CHECKPOINT_DIR, REPORTS_DIR))
OCCUPIED = ("Run directory {path} already exists and is not empty. Continue it with --resume (resume=True), "
            "replace it with --overwrite (overwrite=True), or choose another --output.")


def temporary_target(name):
    """The name of the file that ``name`` is a temporary file of (``temporary_path``), or None."""
    match = TEMPORARY_NAME.fullmatch(name)
    return match["target"] if match else None


def is_own_entry(entry, layout=RUN_LAYOUT):
    """Whether ``entry`` (a path in a folder of ``layout``) is one kmedssl writes there: a file or folder the
    layout names, or a temporary file of such a file; never a symbolic link."""
    if entry.is_symlink():
        return False
    if entry.is_dir():
        return any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in layout.folders)
    name = temporary_target(entry.name) or entry.name
    return entry.is_file() and any(fnmatch.fnmatchcase(name, pattern) for pattern in layout.files)


def is_marked(path, layout=RUN_LAYOUT):
    """Whether folder ``path`` holds the marker file kmedssl wrote (its header checked), or a temporary one."""
    marker = pathlib.Path(path) / layout.marker
    if marker.is_file() and not marker.is_symlink():
        with open(marker, "rb") as handle:
            return handle.read(len(layout.header)) == layout.header.encode()
    return any(temporary_target(entry.name) == layout.marker for entry in pathlib.Path(path).iterdir())


def is_interrupted_creation(path, layout=RUN_LAYOUT):
    """Whether folder ``path`` holds only what a creation killed before its second file leaves: temporary
    files and kmedssl's marker (a run directory's ``recipe.toml`` without ``environment.json``)."""
    entries = list(pathlib.Path(path).iterdir())
    if not all(is_own_entry(e, layout) and (e.name == layout.marker or temporary_target(e.name)) for e in entries):
        return False
    return not (pathlib.Path(path) / layout.marker).exists() or is_marked(path, layout)


def occupied(path, layout=RUN_LAYOUT):
    """Whether ``path`` is a folder that holds something: more than an interrupted creation leaves (there is
    no run in that to lose, so a new one may start there, as in an empty folder)."""
    path = pathlib.Path(path)
    return path.is_dir() and any(path.iterdir()) and not is_interrupted_creation(path, layout)


def check_overwrite(path, data=None, layout=RUN_LAYOUT):
    """The entries of folder ``path`` that ``--overwrite`` deletes (the folder itself stays).

    Only a folder of ``layout`` that kmedssl created may be overwritten: it holds the marker kmedssl wrote
    and nothing but the layout's entries; it is not the current directory nor one holding it, and it does
    not hold the ``data`` path.

    Raises:
        FileExistsError: one line naming ``path`` and why it may not be overwritten.
    """
    path = pathlib.Path(path)
    folder, here = path.resolve(), pathlib.Path.cwd().resolve()
    data_path = None if data in (None, "phantom") else pathlib.Path(data).expanduser().resolve()
    foreign = sorted(entry.name for entry in path.iterdir() if not is_own_entry(entry, layout))
    reason = None
    if folder == here:
        reason = "it is the current directory"
    elif folder in here.parents:
        reason = "it holds the current directory"
    elif data_path is not None and (data_path == folder or folder in data_path.parents):
        reason = f"it holds the data (--data {data})"
    elif foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        reason = f"it is not a kmedssl {layout.name} (it holds {', '.join(foreign[:3])}{more})"
    elif not is_marked(path, layout):
        reason = f"it is not a kmedssl {layout.name} (it has no {layout.marker} written by kmedssl)"
    if reason:
        raise FileExistsError(f"refusing to --overwrite {path}: {reason}")
    return sorted(path.iterdir())


def delete_entries(entries):
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)


def prepare_run_dir(path, overwrite=False, data=None, layout=RUN_LAYOUT):
    """Create the folder ``path`` (a run directory, or another ``layout``); an occupied one is never
    silently reused.

    The leftovers of an interrupted creation are removed (``occupied``). With ``overwrite``, the entries of
    an occupied folder are deleted if ``check_overwrite`` allows it (``data``: the data path of the run).

    Raises:
        FileExistsError: ``path`` is occupied and ``overwrite`` is False, or ``check_overwrite`` refuses.
    """
    path = pathlib.Path(path)
    if occupied(path, layout):
        if not overwrite:
            raise FileExistsError(OCCUPIED.format(path=path))
        delete_entries(check_overwrite(path, data, layout))
    elif path.is_dir():
        delete_entries(list(path.iterdir()))  # an interrupted creation's temporary files and marker
    path.mkdir(parents=True, exist_ok=True)
    return path


def existing_run(path, overwrite=False, resume=False, data=None):
    """Whether ``path`` holds a run to resume; checks, without writing, that the run may start there.

    With ``resume``, a missing or empty directory, or one whose creation was interrupted (``occupied``),
    means a new run (so the same command can be repeated after any interruption); an occupied one must be a
    kmedssl run directory. With ``overwrite``, ``check_overwrite`` must allow deleting what ``path`` holds
    (``data``: the data path of the run).

    Raises:
        ValueError: both ``overwrite`` and ``resume``.
        FileNotFoundError: ``resume`` into an occupied directory without ``recipe.toml``.
        FileExistsError: an occupied directory without ``resume`` or ``overwrite``, or one that
            ``check_overwrite`` refuses to overwrite.
    """
    if overwrite and resume:
        raise ValueError("Expected at most one of --resume (resume=True) and --overwrite (overwrite=True). "
                         "Received: both")
    path = pathlib.Path(path)
    taken = occupied(path)
    if taken and resume and not (path / RECIPE_FILE).is_file():
        raise FileNotFoundError(f"{path / RECIPE_FILE} not found: {path} is not a kmedssl run directory, so there "
                                f"is nothing to resume")
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} is a file. Expected a run directory for --output")
    if taken and overwrite:
        check_overwrite(path, data)
    if taken and not (resume or overwrite):
        raise FileExistsError(OCCUPIED.format(path=path))
    return taken and resume


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
    lines = [RECIPE_HEADER, f'method = "{recipe.method}"', f'data_kind = "{recipe.data_kind}"',
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


# === CSV reports ===

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell):
    """``cell`` as a CSV report writes it: text that a spreadsheet would run as a formula (it starts with
    ``=``, ``+``, ``-``, ``@``, a tab or a carriage return: OWASP's CSV-injection rule) gets a leading ``'``.
    Numbers, and text that is one number (``-0.5``, ``-inf``), are written as they are."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS) and not is_number_text(cell):
        return "'" + cell
    return cell


def is_number_text(text):
    """Whether ``text`` is one number as Python writes it (no surrounding blanks)."""
    try:
        float(text)
    except ValueError:
        return False
    return text == text.strip()


# === Training log ===


def write_log(run_dir, rows):
    """Rewrite ``training_log.csv`` and ``training_log.jsonl`` from ``rows`` (one dict per finished epoch).

    Columns: ``epoch``, ``step``, then every other key in sorted order; floats are written with ``repr``
    (exact), NaN as ``nan`` in the CSV and ``null`` in the JSON lines. CSV cells pass ``spreadsheet_safe``:
    numbers are unchanged, text that starts like a formula (a name logged by a callback) is quoted.
    """
    keys = sorted({key for row in rows for key in row} - {"epoch", "step"})
    columns = ["epoch", "step", *keys]
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow([spreadsheet_safe(key) for key in columns])
    for row in rows:
        writer.writerow([spreadsheet_safe(log_text(row.get(key, ""))) for key in columns])
    lines = [json.dumps({key: log_json(row[key]) for key in columns if key in row}) for row in rows]
    atomic_write(pathlib.Path(run_dir) / LOG_FILE, table.getvalue())
    atomic_write(pathlib.Path(run_dir) / LOG_JSON_FILE, "".join(line + "\n" for line in lines))


def log_text(value):
    return repr(value) if isinstance(value, float) else str(value)


def log_json(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


# === Throughput ===

# Columns of throughput.csv (``kmedssl.training.callbacks.ThroughputMeter.record`` and the row's position).
THROUGHPUT_COLUMNS = ("epoch", "process", "step", "batches", "images", "input_workers", "input_images",
                      "input_seconds", "input_images_per_s_per_worker", "input_images_per_s", "step_seconds",
                      "step_images_per_s", "input_wait_seconds", "wall_seconds", "input_wait_fraction")
THROUGHPUT_INTEGERS = ("epoch", "process", "step", "batches", "input_workers")


def write_throughput(run_dir, rows):
    """Rewrite ``throughput.csv`` from ``rows`` (one dict per epoch and process, ``THROUGHPUT_COLUMNS``).

    Timings differ from run to run, so they are kept out of the training log, which a resumed run reproduces
    bit for bit; floats are written with 6 significant digits, NaN as ``nan``.
    """
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(THROUGHPUT_COLUMNS)
    for row in rows:
        writer.writerow([format(row[key], ".6g") if isinstance(row[key], float) else row[key]
                         for key in THROUGHPUT_COLUMNS])
    atomic_write(pathlib.Path(run_dir) / THROUGHPUT_FILE, table.getvalue())


def read_throughput(run_dir):
    """The rows of the run's ``throughput.csv`` (integers and floats); none when it is missing or unreadable
    (it is a report: a run never depends on it)."""
    path = pathlib.Path(run_dir) / THROUGHPUT_FILE
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        return [{key: (int if key in THROUGHPUT_INTEGERS else float)(row[key]) for key in THROUGHPUT_COLUMNS}
                for row in rows]
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError):
        return []


# === Outputs ===


def save_model_file(model, path):
    """``keras.saving.save_model`` to ``path`` (a ``.keras`` file), atomically."""
    path = pathlib.Path(path)
    temporary = temporary_path(path, suffix=".keras")
    keras.saving.save_model(model, temporary)
    commit(temporary, path)
    return path


def write_skipped(path, skipped):
    """List every skipped data item (file, problem) in ``data_skipped.csv`` (cells made ``spreadsheet_safe``:
    file names come from the user's data); nothing is written when none."""
    if skipped:
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(["file", "problem"])
        writer.writerows([spreadsheet_safe(cell) for cell in item] for item in skipped)
        atomic_write(pathlib.Path(path) / SKIPPED_FILE, table.getvalue())
