"""One pretraining run of a recipe, written to a run directory that survives interruption (SPEC §8; layout
in ``kmedssl.training.runs``, checkpoints in ``kmedssl.training.checkpoints``). The public entry point is
``kmedssl.recipes.pretrain``, which makes the recipe and calls ``run_pretraining``.

Stages: run options and checks that need no data -> the run directory's state (new, to be overwritten, or a
run to resume, whose settings must match) -> data and model -> ``train`` (one ``fit`` per epoch, from the
newest checkpoint when resuming) -> the final encoder.
"""

import contextlib
import dataclasses
import math
import pathlib
import shutil
import sys
import tempfile

import keras
import numpy as np

from kmedssl.data.sources import open_source, split_records
from kmedssl.eval.monitor import ProbeMonitor
from kmedssl.interop import load_into, parse_init
from kmedssl.ops.runtime import compile_error, device_description, float16_training_error, seed_everything
from kmedssl.training import runs
from kmedssl.training.ssl_health import SSLHealthMonitor, health_monitor, plot_training_curves
from kmedssl.training.callbacks import (
    ON_NONFINITE,
    NonFiniteLossGuard,
    ThroughputMeter,
    input_bound,
    throughput_line,
    throughput_totals,
)
from kmedssl.training.precision import float32_copy, precision_scope
from kmedssl.training.checkpoints import (
    Checkpointer,
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    restore_checkpoint,
)

OUT_OF_MEMORY_MARKERS = ("out of memory", "outofmemory", "resource_exhausted", "resourceexhausted",
                         "oom when allocating", "can't allocate memory")


class OutOfMemoryError(MemoryError):
    """Training ran out of device or host memory; the message names the step and the batch size."""


@dataclasses.dataclass
class PretrainResult:
    """What ``pretrain`` returns: the trained method model, its encoder, the loss history (every epoch of the
    run, including those before a resume), the run dir, the recipe, the step a resumed run started at, and
    the throughput of this process over the run (``throughput_totals`` of its ``throughput.csv`` rows: the
    input pipeline's and the training step's images/s and the fraction of time the step waited for input;
    ``None`` if no epoch was measured)."""

    model: keras.Model
    encoder: keras.Model
    history: dict
    run_dir: pathlib.Path
    recipe: object
    resumed_from: int | None = None
    throughput: dict | None = None


def run_pretraining(recipe, seed=0, data="phantom", output_dir=None, resume=False, overwrite=False, format=None,
                    on_error="raise", verbose="auto", checkpoint_every=None, keep_checkpoints=3, on_nonfinite="stop",
                    callbacks=(), engine=None, init=None):
    """Pretrain with ``recipe`` and write its run directory; continue an interrupted run with ``resume``.

    The arguments are those of ``kmedssl.recipes.pretrain`` (documented there), after the recipe is made:
    ``engine`` is the data-parallel engine (``kmedssl.distributed.strategy.data_parallel``) or None.

    Returns:
        ``PretrainResult(model, encoder, history, run_dir, recipe, resumed_from)``.
    """
    options = run_options(checkpoint_every, keep_checkpoints, on_nonfinite)
    check_batch_size(recipe)
    if recipe.precision == "fp16" and float16_training_error():
        raise ValueError(float16_training_error())
    if engine is not None:
        engine.check_batch_size(recipe.batch_size)
        verbose = verbose if engine.is_main else 0
    if resume and output_dir is None:
        raise ValueError("Expected output_dir (--output) naming the run to resume. Received: none")
    run_dir = pathlib.Path(output_dir or runs.default_run_dir(recipe.method))
    init = None if init is None else parse_init(init)  # (path, source_normalization)
    settings = {"data": data_identity(data), "format": format, "on_error": on_error,
                "init": None if init is None else (f"{init[1]}:" if init[1] else "") + str(init[0].resolve())}
    resuming = runs.existing_run(run_dir, overwrite=overwrite, resume=resume, data=data)
    if resuming:
        check_same_run(run_dir, recipe, seed, settings)
    if engine is not None:
        engine.barrier()  # every process has read the run directory before the main one writes it
    seed_everything(seed)

    with engine.scope() if engine is not None else contextlib.nullcontext(), \
            process_run_dir(engine, run_dir) as write_dir:
        source, splits, dataset = open_training_data(recipe, data, seed, format=format, on_error=on_error)
        steps = min(recipe.steps_per_epoch or len(dataset), len(dataset))
        total_steps = steps * recipe.epochs

        with precision_scope(recipe.precision):  # layers compute in it; variables stay float32
            encoder = recipe.build_encoder()
            if init is not None:  # before build_model, so that a teacher copies the loaded weights
                load_into(encoder, init[0], source_normalization=init[1])  # a resume restores its checkpoint
            model = recipe.build_model(encoder, total_steps=total_steps, seed=seed,
                                       num_labels=len(source.label_names))
            model.compile(optimizer=recipe.build_optimizer(total_steps, steps),  # fp16: loss scaling
                          jit_compile=step_compilation(recipe.jit_compile))

        monitors = run_monitors(recipe, source, splits["val"], seed, engine)

        start = newest_checkpoint(run_dir, steps) if resuming else None
        if resuming and write_dir == run_dir:
            runs.record_resume(run_dir, start.step if start else 0, run_options=options)
        else:  # a new run, or the scratch directory of a non-main process
            runs.prepare_run_dir(write_dir, overwrite=overwrite, data=data)
            runs.write_recipe(write_dir, recipe, seed)
            runs.write_environment(write_dir, seed, **settings, run_options=options,
                                   **({"devices": engine.description} if engine is not None else {}))
        meter = ThroughputMeter(images_per_sample=getattr(model, "images_per_sample", 1))
        rows = train(model, dataset, write_dir, recipe.epochs, steps, start=start,
                     callbacks=[*monitors, *callbacks], verbose=verbose, engine=engine, meter=meter, **options)
        runs.save_model_file(float32_copy(encoder), write_dir / runs.ENCODER_FILE)
        skipped = dataset.skipped if engine is None else engine.gather_lists(dataset.skipped)  # rows per process
        runs.write_skipped(write_dir, [*source.skipped, *dict.fromkeys(tuple(item) for item in skipped)])
        plot_training_curves(rows, write_dir / runs.REPORTS_DIR / "training_curves.png",
                             dim=next((m.dim for m in monitors if isinstance(m, SSLHealthMonitor)), None),
                             title=f"{recipe.method}: {run_dir.name}")
    return PretrainResult(model=model, encoder=encoder, history=history_of(rows), run_dir=run_dir, recipe=recipe,
                          resumed_from=start.step if start else (0 if resuming else None),
                          throughput=meter.totals())


def step_compilation(setting):
    """``model.compile``'s ``jit_compile`` for the recipe's ``jit_compile`` (``JIT_COMPILE``): ``"true"`` where
    the backend cannot compile (``compile_error``) prints one line to stderr and gives an eager step."""
    from kmedssl.recipes.base import JIT_COMPILE  # here: kmedssl.recipes imports this module

    error = compile_error() if setting == "true" else None
    if error:
        print(f"kmedssl: {error}; training without compilation (jit_compile=false).", file=sys.stderr)
        return False
    return JIT_COMPILE[setting]


def open_training_data(recipe, data, seed, format=None, on_error="raise"):
    """``(source, splits, dataset)``: the data source, its subject splits and the training ``ViewDataset``."""
    source = open_source(data, kind=recipe.data_kind, size=recipe.data_size, seed=recipe.data_seed,
                         format=format, on_error=on_error)
    splits = split_records(source, seed=recipe.split_seed)
    return source, splits, recipe.training_data(source, splits["train"], seed, on_error=on_error)


# === Settings ===


def run_options(checkpoint_every=None, keep_checkpoints=3, on_nonfinite="stop"):
    """The run options, converted (they may be strings from ``--set``) and checked."""
    every = _integer("checkpoint_every", checkpoint_every, none_ok=True)
    keep = _integer("keep_checkpoints", keep_checkpoints)
    if every is not None and every < 0 or keep < 0:
        raise ValueError(f"Expected checkpoint_every >= 1 (or None) and keep_checkpoints >= 0. Received: "
                         f"checkpoint_every={checkpoint_every!r}, keep_checkpoints={keep_checkpoints!r}")
    if on_nonfinite not in ON_NONFINITE:
        raise ValueError(f"Expected on_nonfinite in {ON_NONFINITE}. Received: on_nonfinite={on_nonfinite!r}")
    return {"checkpoint_every": every or None, "keep_checkpoints": keep, "on_nonfinite": on_nonfinite}


def _integer(key, value, none_ok=False):
    if none_ok and (value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))):
        return None
    try:
        number = float(value)
        if not number.is_integer():
            raise ValueError(value)
        return int(number)
    except (TypeError, ValueError):
        raise ValueError(f"Expected {key} to be an integer. Received: {key}={value!r}") from None


def check_batch_size(recipe):
    if recipe.method_class.contrastive and recipe.batch_size < 2:
        raise ValueError(
            f"Expected batch_size >= 2 for {recipe.method}: its contrastive loss compares each sample with the "
            f"others of its batch. Received: batch_size={recipe.batch_size}"
        )


def data_identity(data):
    """``"phantom"``, or the absolute path of ``data`` (so a resume from another folder still matches)."""
    return data if data == "phantom" else str(pathlib.Path(data).expanduser().resolve())


def check_same_run(run_dir, recipe, seed, settings):
    """Raise ``ValueError`` listing every setting (the Keras backend included) that differs from the run being
    resumed in ``run_dir``. Fields missing from the run's ``recipe.toml`` (None, or added to kmedssl since)
    count as the recipe class's defaults; values are compared as ``recipe.toml`` writes them."""
    saved = runs.read_recipe(run_dir)
    if saved.get("method") != recipe.method:
        raise ValueError(f"Expected method {saved.get('method')!r}, the method of the run in {run_dir}. "
                         f"Received: {recipe.method!r}")
    fields = dataclasses.fields(recipe)
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    environment = runs.read_environment(run_dir)
    given = {**dataclasses.asdict(recipe), "seed": int(seed), **settings, "backend": keras.backend.backend()}
    stored = {**defaults, **{f.name: saved[f.name] for f in fields if f.name in saved}, "seed": saved.get("seed"),
              "data": environment.get("data"), "format": environment.get("format"),
              "on_error": environment.get("on_error", "raise"), "init": environment.get("init"),
              "backend": environment.get("backend")}
    differences = [f"{key}={given[key]!r} (the run has {stored.get(key)!r})" for key in given
                   if runs.toml_value(given[key]) != runs.toml_value(stored.get(key))]
    if differences:
        raise ValueError(
            f"Expected the settings of the run being resumed in {run_dir}. Received: {'; '.join(differences)}. "
            f"Resume with the same command plus --resume, or start a new run with another --output."
        )


def newest_checkpoint(run_dir, steps_per_epoch):
    """The newest checkpoint of the run (None if it has none), checked against the data's epoch length."""
    runs.remove_temporary_files(run_dir)
    runs.remove_temporary_files(pathlib.Path(run_dir) / runs.CHECKPOINT_DIR)
    path = latest_checkpoint(run_dir)
    if path is None:
        return None
    start = load_checkpoint(path)
    if start.meta.get("steps_per_epoch") != steps_per_epoch:
        raise CheckpointError(
            f"{path}: written for epochs of {start.meta.get('steps_per_epoch')} steps, but the data now gives "
            f"{steps_per_epoch}; the data changed since the run started, so it cannot be resumed exactly"
        )
    return start


# === Training ===


@contextlib.contextmanager
def process_run_dir(engine, run_dir):
    """The directory this process writes: ``run_dir`` on the main process; on the other processes of a
    multi-process engine (their state equals the main one's), a temporary directory removed at the end."""
    if engine is None or engine.is_main:
        yield pathlib.Path(run_dir)
        return
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="kmedssl-replica-"))
    try:
        yield scratch / "run"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def train(model, dataset, run_dir, epochs, steps_per_epoch, start=None, checkpoint_every=None, keep_checkpoints=3,
          on_nonfinite="stop", callbacks=(), verbose="auto", engine=None, meter=None):
    """Train a compiled ``model`` on ``dataset`` epoch by epoch, writing the log and checkpoints to ``run_dir``.

    Each epoch ``e`` is one ``fit`` over ``dataset.epoch_batches(e, first, steps_per_epoch)``, with
    ``initial_epoch=e``; ``first`` is 0, or ``start.batch`` in the epoch a resumed run starts in. With a
    ``start`` checkpoint, the model and its optimizer are built, their variables (and the data items skipped
    so far) are restored, the log is rewritten to the checkpoint's rows, and training continues at
    ``(start.epoch, start.batch)``; a finished run only has its state restored. With a data-parallel ``engine``
    (``kmedssl.distributed.strategy``) the model is prepared for it (torch: DDP) once its state exists, and each
    process feeds its rows of every global batch (``engine.shard``).

    Throughput: ``meter`` (a ``ThroughputMeter``, made here if None) times each epoch's input pipeline and
    steps; after each epoch a row per process (gathered from every process of the engine) is added to
    ``throughput.csv`` (on a resume, after the rows of the finished epochs) and, unless ``verbose`` is 0, this
    process's figures are printed below the progress bar (``throughput_line``), and over the run at the end.
    ``meter.rows`` holds the file's rows, ``meter.own`` this process's records (``meter.totals()``).

    Returns:
        The log rows of every finished epoch of the run (``Checkpointer.history``).

    Raises:
        OutOfMemoryError: a step ran out of memory (the message names it, and the batch size).
    """
    first_epoch, first_batch = (start.epoch, start.batch) if start is not None else (0, 0)
    if start is not None or engine is not None:
        build_training_state(model, dataset.batch(0, 0))
    if start is not None:
        restore_checkpoint(model, start)
        data = start.meta.get("data", {})
        dataset.skipped[:] = [tuple(item) for item in data.get("skipped", [])]
        dataset.bad = set(data.get("bad", []))
    if engine is not None:
        engine.prepare(model)
    guard = NonFiniteLossGuard(on_nonfinite, start=(first_epoch, first_batch),
                               skipped=start.meta.get("skipped_steps", 0) if start is not None else 0)
    checkpointer = Checkpointer(
        run_dir, steps_per_epoch, every=checkpoint_every, keep=keep_checkpoints, start=start,
        data_state=lambda: {"skipped": [list(item) for item in dataset.skipped], "bad": sorted(dataset.bad)},
    )
    runs.write_log(run_dir, checkpointer.history)
    meter = meter if meter is not None else ThroughputMeter(getattr(model, "images_per_sample", 1))
    meter.rows = [row for row in runs.read_throughput(run_dir) if row["epoch"] <= first_epoch] \
        if start is not None else []
    meter.own = [row for row in meter.rows if row["process"] == 0] if engine is None or engine.is_main else []
    callback_list = keras.callbacks.CallbackList([meter.first, *callbacks, guard, checkpointer, meter.last],
                                                 add_history=True,
                                                 add_progbar=verbose != 0, model=model, verbose=verbose, epochs=epochs,
                                                 steps=steps_per_epoch)
    for epoch in range(first_epoch, epochs):
        first = first_batch if epoch == first_epoch else 0
        callback_list.set_params({"verbose": verbose, "epochs": epochs, "steps": steps_per_epoch - first})
        try:
            batches = dataset.epoch_batches(epoch, first, steps_per_epoch)
            meter.reset()
            model.fit(meter.wrap(batches if engine is None else engine.shard(batches)), epochs=epoch + 1,
                      initial_epoch=epoch, callbacks=callback_list, shuffle=False, verbose=verbose)
        except Exception as error:
            if verbose != 0:
                print(flush=True)  # end the progress bar's line, so that the error starts on its own
            if not is_out_of_memory(error):
                raise
            batch_size = dataset.batch_size
            raise OutOfMemoryError(
                f"Out of memory in training step {checkpointer.step + 1} (epoch {epoch + 1}) with "
                f"batch_size={batch_size} on {device_description()}. Lower --batch-size (e.g. --batch-size "
                f"{max(batch_size // 2, 2)}) or --image-size, or use a smaller model (--size phantom)."
            ) from error
        record_throughput(meter, run_dir, epoch, checkpointer.step, engine, verbose)
    if verbose != 0 and meter.own:
        print(throughput_summary(meter), flush=True)
    return checkpointer.history


def record_throughput(meter, run_dir, epoch, step, engine=None, verbose="auto"):
    """After epoch ``epoch``: this process's record joins ``meter.own``; every process's (one collective with
    an engine of several processes) joins ``meter.rows`` and ``throughput.csv``; the line is printed."""
    record = meter.record()
    meter.own.append(record)
    records = engine.gather_lists([record]) if engine is not None else [record]
    meter.rows += [{"epoch": epoch + 1, "process": process, "step": step, **row} for process, row in enumerate(records)]
    runs.write_throughput(run_dir, meter.rows)
    if verbose != 0:
        print(throughput_line(record), flush=True)


def throughput_summary(meter):
    """The run's line: this process's throughput over its epochs, which of input and step bounds it (judged
    without the first epoch when there are more, since on JAX and TensorFlow its step time holds the tracing and
    compilation), and under several processes the one that waited most for its input."""
    totals = meter.totals()
    judged = throughput_totals(meter.own[1:]) if len(meter.own) > 1 else totals
    if not math.isfinite(judged["input_wait_fraction"]):
        verdict = "the wait for input was not measured"
    elif input_bound(judged):
        verdict = "input-bound: the step waited for batches (more --set workers=N, or faster storage, would help)"
    else:
        verdict = "step-bound: the input pipeline keeps up"
    processes = sorted({row["process"] for row in meter.rows})
    whose = " of this process" if len(processes) > 1 else ""
    line = f"Throughput over {len(meter.own)} epoch(s){whose}: {throughput_line(totals)}; {verdict}"
    if len(processes) > 1:
        waits = {p: throughput_totals([r for r in meter.rows if r["process"] == p])["input_wait_fraction"]
                 for p in processes}
        worst = max(processes, key=lambda p: waits[p] if math.isfinite(waits[p]) else -1.0)
        line += f"; process {worst} of {len(processes)} waited most ({100 * waits[worst]:.0f} %)"
    return line


def build_training_state(model, batch):
    """Create every variable of ``model`` and its optimizer, as ``fit`` would, without changing any state:
    the model is called on symbolic tensors shaped like ``batch``, then the optimizer is built."""
    inputs = batch[0] if isinstance(batch, tuple) else batch
    model({key: keras.KerasTensor(value.shape, dtype=keras.backend.standardize_dtype(value.dtype))
           for key, value in inputs.items()}, training=False)
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def is_out_of_memory(error):
    """Whether ``error`` reports exhausted memory (MemoryError, or a backend's out-of-memory error)."""
    if isinstance(error, MemoryError):
        return True
    text = f"{type(error).__name__}: {error}".lower()
    return any(marker in text for marker in OUT_OF_MEMORY_MARKERS)


def history_of(rows):
    """``{key: [value per epoch]}`` of the log rows (``epoch`` and ``step`` left out), as Keras's History."""
    keys = sorted({key for row in rows for key in row} - {"epoch", "step"})
    return {key: [row.get(key, math.nan) for row in rows] for key in keys}


def run_monitors(recipe, source, records, seed, engine=None):
    """The per-epoch monitors of a run on the validation ``records``: the kNN probe (``probe_every``) and the SSL
    health of the embeddings (``health_every``; the collapse warning printed by the main process only)."""
    health = health_monitor(source, records, recipe.image_size, seed=seed, every_n_epochs=recipe.health_every,
                            warn_on_collapse=engine is None or engine.is_main) if recipe.health_every else []
    return [*probe_monitor(recipe, source, records, seed), *health]


def probe_monitor(recipe, source, records, seed, max_images=256):
    """``[ProbeMonitor]`` on up to ``max_images`` labelled validation images when ``recipe.probe_every`` > 0."""
    if not recipe.probe_every:
        return []
    if not source.label_names or not records:
        raise ValueError(f"Expected labelled validation images for probe_every={recipe.probe_every}. "
                         f"Received: {len(records)} validation images, labels {source.label_names}")
    chosen = [records[i] for i in np.random.default_rng(seed).permutation(len(records))[:max_images]]
    images = np.stack([source.load_image(r, recipe.image_size)[..., None] for r in chosen])
    labels = np.asarray([r.labels for r in chosen], dtype="float32")
    return [ProbeMonitor(images, labels, every_n_epochs=recipe.probe_every, seed=seed)]
