"""Training checkpoints (SPEC §8): atomic, complete, loaded without unpickling anything.

A checkpoint is one NumPy archive, ``<run>/checkpoints/step-NNNNNNNN.npz`` (NNNNNNNN: training batches
consumed so far), holding the whole training state:

    model/NNNNN      ``model.variables``: weights, non-trainable state (ACE's EMA teacher, centre and
                     ``ema_step``, MVMAE's ``step``, S-PCL's trainable ``log_scale``) and the state of every
                     ``keras.random.SeedGenerator`` (masks, partitions, augmentations)
    optimizer/NNNNN  ``model.optimizer.variables`` (``iterations``, moments, ...)
    metrics/NNNNN    ``model.metrics_variables``: the running means of the epoch in progress
    meta             UTF-8 JSON: format and version, the position ``(epoch, batch, step)``, the count of
                     skipped non-finite steps, the log rows of the finished epochs, the data items skipped
                     so far, and the path, shape and dtype of every variable

The position is the next batch to train on: batch ``batch`` (0-based) of epoch ``epoch``. The data order
of an epoch is a function of ``(seed, epoch)`` and the views of a sample of ``(seed, epoch, index)``
(``kmedssl.data.pipeline``), so the position is all the input pipeline needs to continue identically.

Files are written to a temporary name, fsync-ed and renamed (``runs.atomic_write``): a run killed at any
moment leaves complete checkpoints only. They are read with ``numpy.load(allow_pickle=False)``; a
truncated, corrupt or tampered file (a meta field of the wrong type, an array of the wrong shape or type, a
NaN or Inf value, which ``save_checkpoint`` never writes), or one written for another model, raises
``CheckpointError``.

Why not ``keras.callbacks.BackupAndRestore`` (Keras 3.15): it writes ``latest.weights.h5`` and then
``training_metadata.json`` in place (no temporary file, no rename), so a kill between or during the two
writes leaves a torn or mismatched pair; it restores only the epoch number (the batch it records is never
used), so a run always restarts at an epoch boundary without the running loss means of that epoch; it keeps
one (or two) states, not the last K; and the weights file does not record the data order position. The
``Checkpointer`` below saves what exact mid-epoch resume needs and nothing else.
"""

import dataclasses
import io
import json
import pathlib
import re
import zipfile

import keras
import numpy as np

from kmedssl.data.npz import ARCHIVE_ERRORS, array_headers, declared_size_problem
from kmedssl.training import runs
from kmedssl.training.callbacks import NonFiniteLossError

FORMAT, VERSION = "kmedssl-checkpoint", 1
GROUPS = ("model", "optimizer", "metrics")
NAME_PATTERN = re.compile(r"^step-(\d{8,})\.npz$")
TAMPERED = "the file is corrupt or was tampered with; delete it to resume from the one before"

# Saved models (.keras archives): the members read before building, and the bounds checked on them.
MODEL_CONFIG, MODEL_WEIGHTS = "config.json", ("model.weights.h5", "model.weights.npz")
MODEL_CONFIG_LIMIT = 2**24  # bytes of config.json read (a backbone's is about 1 kB)
WEIGHT_BYTES = 4  # float32; a file of half-precision weights holds half as many bytes, within the factor 2
WEIGHTS_SLACK = 2**20  # refused: declared weights > 2 x the weights file + this many bytes
# Bytes of the NumPy constants a Swin builds in __init__ besides its weights (shifted-window masks, relative
# position indices): they grow with image_size and window_size, which the weight count alone does not bound.
# Swin-B at 1024 px needs about 25 MB.
SWIN_CONSTANT_LIMIT = 2**30


class CheckpointError(ValueError):
    """A checkpoint (or saved model) file that cannot be used: truncated, corrupt, tampered or mismatched."""


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint: ``arrays[group]`` lists the values of ``GROUPS`` in variable order."""

    path: pathlib.Path
    meta: dict
    arrays: dict

    @property
    def epoch(self):
        return self.meta["epoch"]

    @property
    def batch(self):
        return self.meta["batch"]

    @property
    def step(self):
        return self.meta["step"]


# === Files ===


def checkpoint_dir(run_dir):
    return pathlib.Path(run_dir) / runs.CHECKPOINT_DIR


def list_checkpoints(run_dir):
    """``[(step, path)]`` of the run's checkpoints, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in folder.iterdir() if (match := NAME_PATTERN.match(path.name))]
    return sorted(found)


def latest_checkpoint(run_dir):
    """The path of the newest checkpoint of the run, or None."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def state_variables(model):
    """``{group: [variables]}``: everything a training step reads or writes."""
    return {"model": list(model.variables), "optimizer": list(model.optimizer.variables),
            "metrics": list(model.metrics_variables)}


def variable_array(variable):
    """The value of ``variable`` as NumPy (bfloat16 widened to float32, which restores exactly)."""
    array = np.asarray(variable.numpy())  # also reads tf.distribute's mirrored and sync-on-read variables
    if keras.backend.standardize_dtype(variable.dtype) == "bfloat16":
        array = array.astype("float32")
    return array


def save_checkpoint(run_dir, model, epoch, batch, step, **meta):
    """Write the state of ``model`` at position ``(epoch, batch)`` (``step`` batches consumed), atomically.

    Args:
        run_dir: the run directory (the file goes to its ``checkpoints/``).
        model: a compiled model whose optimizer is built.
        epoch, batch, step: the position (see the module docstring).
        **meta: JSON-serialisable extras (``history``, ``skipped_steps``, ``data`` ...).

    Raises:
        NonFiniteLossError: a floating-point variable holds NaN or Inf (the state is not written, so the
            last good checkpoint stays the newest).
    """
    arrays, specs = {}, {}
    for group, variables in state_variables(model).items():
        specs[group] = []
        for index, variable in enumerate(variables):
            array = variable_array(variable)
            if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
                raise NonFiniteLossError(
                    f"Non-finite values in {variable.path} at epoch {epoch + 1}, step {step}: the state is not "
                    f"checkpointed. Try a lower learning rate or gradient clipping (--set gradient_clip=1.0)."
                )
            arrays[f"{group}/{index:05d}"] = array
            specs[group].append({"path": variable.path, "shape": list(array.shape),
                                 "dtype": keras.backend.standardize_dtype(variable.dtype)})
    header = {"format": FORMAT, "version": VERSION, "epoch": int(epoch), "batch": int(batch), "step": int(step),
              "keras": keras.__version__, "backend": keras.backend.backend(), **meta, "variables": specs}
    arrays["meta"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return runs.atomic_write(folder / f"step-{int(step):08d}.npz", buffer.getvalue())


def load_checkpoint(path):
    """Read a checkpoint written by ``save_checkpoint``, without unpickling anything.

    Raises:
        CheckpointError: missing, truncated, corrupt, not a kmedssl checkpoint, or inconsistent.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        problems = [declared_size_problem(name, *header) for name, header in array_headers(path).items()]
        if not any(problems):
            with np.load(path, allow_pickle=False) as archive:
                members = {name: archive[name] for name in archive.files}
    except (*ARCHIVE_ERRORS, RuntimeError) as error:
        raise CheckpointError(
            f"{path}: unreadable checkpoint, truncated, corrupt or tampered with ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'}); delete it to resume from the one before"
        ) from None
    if any(problems):
        raise CheckpointError(f"{path}: {next(filter(None, problems))}; {TAMPERED}")
    meta = _checked_meta(path, members)
    arrays = {}
    for group in GROUPS:
        arrays[group] = []
        for index, spec in enumerate(meta["variables"][group]):
            array = members.get(f"{group}/{index:05d}")
            if array is None or list(array.shape) != spec["shape"] or array.dtype.kind not in "biuf":
                raise CheckpointError(f"{path}: array {group}/{index:05d} ({spec['path']}) is missing or has the "
                                      f"wrong shape or type; the file was tampered with")
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                raise CheckpointError(f"{path}: {spec['path']} ({group}/{index:05d}) holds NaN or Inf, which "
                                      f"kmedssl never checkpoints; {TAMPERED}")
            arrays[group].append(array)
    return Checkpoint(path=path, meta=meta, arrays=arrays)


def _checked_meta(path, members):
    try:
        meta = json.loads(bytes(members["meta"]).decode("utf-8"))
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError, TypeError):
        raise CheckpointError(f"{path}: not a kmedssl checkpoint (no readable 'meta' entry)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path}: not a kmedssl checkpoint (format {found!r}, expected {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {meta.get('version')!r}; this kmedssl reads "
                              f"version {VERSION}")
    problem = _meta_problem(meta)
    if problem:
        raise CheckpointError(f"{path}: bad checkpoint metadata: {problem}; {TAMPERED}")
    return meta


def _meta_problem(meta):
    """The first field of a checkpoint's meta with a wrong type or value, described; None if all are sound."""

    def wrong(field, value, expected):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        return f"{field}={shown} (expected {expected})"

    for key in ("epoch", "batch", "step"):
        if not _is_count(meta.get(key)):
            return wrong(key, meta.get(key), "an integer >= 0")
    if "steps_per_epoch" in meta:
        steps = meta["steps_per_epoch"]
        if not _is_count(steps) or steps < 1:
            return wrong("steps_per_epoch", steps, "an integer >= 1")
        if meta["batch"] >= steps or meta["step"] != meta["epoch"] * steps + meta["batch"]:
            return wrong("step", meta["step"], f"epoch * steps_per_epoch + batch with batch < {steps}")
    if not _is_count(meta.get("skipped_steps", 0)):
        return wrong("skipped_steps", meta["skipped_steps"], "an integer >= 0")
    history = meta.get("history", [])
    if not isinstance(history, list) or not all(isinstance(row, dict) and all(map(_is_number, row.values()))
                                                for row in history):
        return wrong("history", history, "a list of log rows, objects of numbers")
    data = meta.get("data", {})
    skipped, bad = (data.get("skipped", []), data.get("bad", [])) if isinstance(data, dict) else (None, None)
    if not (isinstance(skipped, list) and all(isinstance(item, list) and len(item) == 2
                                              and all(isinstance(text, str) for text in item) for item in skipped)
            and isinstance(bad, list) and all(map(_is_count, bad))):
        return wrong("data", data, "an object with lists 'skipped' of [file, problem] and 'bad' of indices")
    for key in ("keras", "backend"):
        if not isinstance(meta.get(key, ""), str):
            return wrong(key, meta[key], "a string")
    variables = meta.get("variables")
    if not isinstance(variables, dict) or set(variables) != set(GROUPS):
        return wrong("variables", variables, f"an object with the groups {GROUPS}")
    expected = "{path: string, shape: list of integers >= 0, dtype: string}"
    for group in GROUPS:
        if not isinstance(variables[group], list):
            return wrong(f"variables.{group}", variables[group], f"a list of {expected}")
        for index, spec in enumerate(variables[group]):
            if not (isinstance(spec, dict) and isinstance(spec.get("path"), str) and isinstance(spec.get("dtype"), str)
                    and isinstance(spec.get("shape"), list) and all(map(_is_count, spec["shape"]))):
                return wrong(f"variables.{group}[{index}]", spec, expected)
    return None


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value):
    return isinstance(value, (int, float))  # a bool too: a callback may log one


def restore_checkpoint(model, checkpoint, groups=("model", "optimizer")):
    """Assign the checkpoint's values of ``groups`` to the variables of ``model`` (built, optimizer built).

    Raises:
        CheckpointError: the checkpoint was written for a different model or optimizer.
    """
    current = state_variables(model)
    for group in groups:
        variables, arrays = current[group], checkpoint.arrays[group]
        if len(variables) != len(arrays):
            raise CheckpointError(
                f"{checkpoint.path}: holds {len(arrays)} {group} variables, the model has {len(variables)}; it was "
                f"written for a different model (method, recipe or Keras version)"
            )
        for variable, array, spec in zip(variables, arrays, checkpoint.meta["variables"][group]):
            if tuple(variable.shape) != array.shape:
                raise CheckpointError(
                    f"{checkpoint.path}: {spec['path']} has shape {array.shape} in the checkpoint and "
                    f"{tuple(variable.shape)} in the model ({variable.path}); it was written for a different model"
                )
            variable.assign(array)


def prune_checkpoints(run_dir, keep):
    """Delete all but the newest ``keep`` checkpoints (``keep`` = 0 keeps all)."""
    if keep:
        for _, path in list_checkpoints(run_dir)[:-keep]:
            path.unlink(missing_ok=True)


# === Saved models ===


def load_model_file(path):
    """``keras.saving.load_model(path, safe_mode=True)`` with one clear error for a damaged file, after
    ``check_model_file`` (nothing is built for a file that declares an impossible model).

    Raises:
        CheckpointError: the file is not a complete ``.keras`` archive, or fails ``check_model_file``, or its
            config asks for code that safe mode refuses (e.g. a ``lambda``), or it does not deserialise.
    """
    path = pathlib.Path(path)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a complete .keras archive (truncated or corrupt); save it again")
    check_model_file(path)
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path}: cannot be loaded safely ({reason})") from None


def check_model_file(path):
    """Check the kmedssl backbones a ``.keras`` archive declares before anything is built.

    Every backbone config in ``config.json`` (at any depth; ``VisionTransformer``, ``SwinTransformer``, the
    ResNets, ``MAEDecoder``) must pass its class's ``validate_config``, and their ``parameter_count`` weights,
    at ``WEIGHT_BYTES`` each, must not exceed twice the bytes of the archive's weights file plus
    ``WEIGHTS_SLACK``: a few bytes of tampered config could otherwise make Keras allocate gigabytes before it
    finds the weights missing. A Swin's constants besides its weights (``swin_constant_bytes``) must not exceed
    ``SWIN_CONSTANT_LIMIT``.

    Raises:
        CheckpointError: one line naming the file and the problem.
    """
    from kmedssl.backbones import (  # registers them too
        MAEDecoder, ResNet, ResNet18, ResNet50, SwinTransformer, VisionTransformer,
    )

    backbones = {keras.saving.get_registered_name(c): c
                 for c in (VisionTransformer, SwinTransformer, ResNet, ResNet18, ResNet50, MAEDecoder)}
    try:
        with zipfile.ZipFile(path) as archive:
            with archive.open(MODEL_CONFIG) as member:
                text = member.read(MODEL_CONFIG_LIMIT + 1)
            if len(text) > MODEL_CONFIG_LIMIT:
                raise CheckpointError(f"{path}: {MODEL_CONFIG} is over {MODEL_CONFIG_LIMIT} bytes; the file is "
                                      f"corrupt or was tampered with")
            declared = 0
            for node in _config_nodes(json.loads(text)):
                cls = backbones.get(node.get("registered_name"))
                if cls is not None and isinstance(node.get("config"), dict):
                    try:
                        cls.validate_config(node["config"])
                        declared += cls.parameter_count(node["config"])
                        if cls is SwinTransformer and swin_constant_bytes(node["config"]) > SWIN_CONSTANT_LIMIT:
                            raise ValueError(f"its window masks and position indices would take "
                                             f"{swin_constant_bytes(node['config']):,} bytes (at most "
                                             f"{SWIN_CONSTANT_LIMIT:,}); image_size or window_size is too large")
                    except (ValueError, OverflowError) as error:
                        raise CheckpointError(f"{path}: invalid {cls.__name__} config: {error}") from None
            needed = (WEIGHT_BYTES * declared - WEIGHTS_SLACK) // 2  # bytes the weights file must hold
            held = sum(_member_bytes(archive, name, needed) for name in MODEL_WEIGHTS if name in archive.namelist())
    except (KeyError, OSError, EOFError, RuntimeError, NotImplementedError, UnicodeDecodeError, json.JSONDecodeError,
            zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path}: not a readable .keras archive ({reason})") from None
    if held < needed:
        raise CheckpointError(
            f"{path}: declares a model of {declared:,} weights ({WEIGHT_BYTES * declared / 2**30:.2f} GiB) but its "
            f"weights file holds only {held:,} bytes; the file is corrupt or was tampered with"
        )


def swin_constant_bytes(config):
    """Bytes of the NumPy constants a ``SwinTransformer`` of a valid ``config`` builds besides its weights: per
    block its int32 relative position index (``w^4`` entries) and, for a shifted block, its float32 mask
    (``(R / w)^2 w^4 = R^2 w^2`` entries), with each stage's grid ``R`` and window ``w`` (``stage_plan``)."""
    from kmedssl.backbones.config_checks import constructor_arguments
    from kmedssl.backbones.swin import SwinTransformer, stage_plan

    a = constructor_arguments(SwinTransformer, config)
    plan = stage_plan(a["image_size"], a["patch_size"], a["embed_dim"], a["depths"], a["window_size"])
    total = 0
    for (resolution, _, window, shift), depth in zip(plan, a["depths"]):
        total += 4 * depth * window**4 + (4 * (depth // 2) * resolution**2 * window**2 if shift else 0)
    return total


def _config_nodes(config):
    """Every object (dict) in a parsed ``config.json``, at any depth (iteratively: no recursion limit)."""
    pending = [config]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            yield item
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def _member_bytes(archive, name, enough):
    """The uncompressed size of archive member ``name``, counted by reading it, up to at least ``enough``."""
    total = 0
    with archive.open(name) as member:
        while total < enough and (chunk := member.read(2**20)):
            total += len(chunk)
    return total


# === Callback ===


class Checkpointer(keras.callbacks.Callback):
    """Writes the run's training log and checkpoints while ``fit`` runs, and resumes from a checkpoint.

    Every ``every`` batches (counted over the whole run) and at the end of every epoch, the state is saved
    with ``save_checkpoint`` and all but the newest ``keep`` checkpoints are deleted (after the new one is
    in place). At each epoch end the epoch's logs become a row of ``history`` and the log files are
    rewritten (``runs.write_log``) before the checkpoint, so a checkpoint's history always covers the log.
    A row is ``{"epoch": e + 1, "step": steps consumed, **logs}``; under on_nonfinite="skip" the
    ``NonFiniteLossGuard`` (placed before this callback) adds ``skipped_steps`` to the logs.

    The training loop runs one ``fit`` per epoch starting at ``initial_epoch=epoch``; the first epoch of a
    resumed run starts at batch ``start.batch``, so Keras's batch numbers are offset by it, and that epoch's
    running loss means are restored from the checkpoint after Keras resets them.

    Args:
        run_dir: the run directory.
        steps_per_epoch: batches per epoch.
        every: also save every ``every`` batches (None or 0: at epoch ends only).
        keep: number of checkpoints kept (0: all).
        start: the ``Checkpoint`` being resumed, or None.
        data_state: ``() -> dict`` (JSON) saved as ``meta["data"]`` (the data items skipped so far).
    """

    def __init__(self, run_dir, steps_per_epoch, every=None, keep=3, start=None, data_state=dict):
        super().__init__()
        self.run_dir = pathlib.Path(run_dir)
        self.steps_per_epoch = int(steps_per_epoch)
        self.every = int(every or 0)
        self.keep = int(keep)
        self.start = start
        self.data_state = data_state
        self.history = list(start.meta.get("history", [])) if start is not None else []
        self.epoch, self.offset = (start.epoch, start.batch) if start is not None else (0, 0)
        self.step = start.step if start is not None else 0
        self.skipped = start.meta.get("skipped_steps", 0) if start is not None else 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        resumed = self.start is not None and epoch == self.start.epoch
        self.offset = self.start.batch if resumed else 0
        if resumed and self.offset:
            restore_checkpoint(self.model, self.start, groups=("metrics",))

    def on_train_batch_end(self, batch, logs=None):
        done = self.offset + batch + 1  # batches of this epoch consumed
        self.step = self.epoch * self.steps_per_epoch + done
        if self.every and self.step % self.every == 0 and done < self.steps_per_epoch:
            self.save(self.epoch, done, logs)

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, "step": self.step}
        row.update({key: np.asarray(keras.ops.convert_to_numpy(value)).item() for key, value in (logs or {}).items()})
        self.history.append(row)
        runs.write_log(self.run_dir, self.history)
        self.save(epoch + 1, 0, logs)

    def save(self, epoch, batch, logs):
        self.skipped = int((logs or {}).get("skipped_steps", self.skipped))
        save_checkpoint(self.run_dir, self.model, epoch, batch, self.step, history=self.history,
                        skipped_steps=self.skipped, steps_per_epoch=self.steps_per_epoch, data=self.data_state())
        prune_checkpoints(self.run_dir, self.keep)
