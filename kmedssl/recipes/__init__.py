"""Public entry points (SPEC §9): ``list_methods``, ``pretrain``, ``evaluate``, and the recipes: the registry
(``registry.py``), the base recipe (``base.py``) and one dataclass per method (``<method>.py``)."""

import keras

from kmedssl.distributed.strategy import data_parallel
from kmedssl.eval.dense_tasks import evaluate_dense
from kmedssl.eval.evaluate import evaluate as evaluate_classification
from kmedssl.recipes.registry import RECIPES, list_methods, make_recipe, read_recipe_file
from kmedssl.training.loop import PretrainResult, run_pretraining


def pretrain(name, data="phantom", size=None, epochs=None, steps_per_epoch=None, batch_size=None,
             image_size=None, seed=None, output_dir=None, resume=False, backend=None, overwrite=False,
             format=None, on_error="raise", verbose="auto", checkpoint_every=None, keep_checkpoints=3,
             on_nonfinite="stop", callbacks=(), devices=None, recipe=None, init=None, **overrides):
    """Pretrain method ``name`` and write its run directory; continue an interrupted run with ``resume``.

    Args:
        name: one of ``kmedssl.recipes.list_methods()``.
        data: ``"phantom"`` (the embedded data set) or a path in one of ``kmedssl.data.formats.FORMATS``.
        size: ``"phantom"`` (CPU-minutes) or ``"paper"`` (the papers' settings); None: the ``recipe`` file's
            ``size``, else ``"phantom"``.
        epochs, steps_per_epoch, batch_size, image_size: shortcuts for the recipe fields of those names.
        seed: seeds weights, data order, masks, partitions and augmentations; None: the ``recipe`` file's
            ``seed``, else 0.
        output_dir: run directory (default ``runs/<method>-<timestamp>``); an existing non-empty one needs
            ``resume=True`` or ``overwrite=True``.
        resume: continue the run in ``output_dir`` from its newest checkpoint, with the optimizer, RNG and
            data-order state, so that it ends exactly as an uninterrupted run would (CPU, same backend). The
            settings (method, recipe, seed, data, format, on_error, backend) must be those of the run; the run
            options below may change. A missing or empty ``output_dir``, or one whose creation was
            interrupted (``runs.occupied``), starts a new run.
        backend: checked against the active Keras backend.
        overwrite: replace an existing run directory: only a kmedssl run directory that holds nothing else
            and not the data (``runs.check_overwrite``); anything else is refused before anything is written.
        format: the on-disk format of ``data`` (inferred when None).
        on_error: ``"raise"`` (a bad file or row raises ``DataError``) or ``"skip"`` (skipped and listed in
            the run directory's ``data_skipped.csv``).
        verbose: ``fit``'s progress output.
        checkpoint_every: also checkpoint every N training steps (None: at epoch ends only).
        keep_checkpoints: checkpoints kept (the newest; 0 keeps all).
        on_nonfinite: ``"stop"`` (raise ``NonFiniteLossError`` at the first NaN/Inf loss; the last good
            checkpoint stays) or ``"skip"`` (undo such steps and count them as ``skipped_steps`` in the log).
        callbacks: extra Keras callbacks, run before the run's own (so they may add logged values).
        devices: data-parallel devices (docs/distributed.md): JAX ``keras.distribution.DataParallel``, TensorFlow
            ``MirroredStrategy`` (``MultiWorkerMirroredStrategy`` with ``TF_CONFIG``), torch DDP (one process per
            device under ``torchrun``; None there means its world size). ``batch_size`` is the global batch.
            Only the main process writes the run directory.
        recipe: a TOML recipe file (``kmedssl.recipes.registry.read_recipe_file``): one of the top-level
            ``recipes/`` folder, or a run's ``recipe.toml`` (which reproduces that run). Precedence: the class
            defaults < ``size`` < the file < the keyword arguments (shortcuts and ``overrides``).
        init: a weights file to start the encoder from instead of random weights (``kmedssl.interop.load_into``:
            ``.safetensors`` / ``.pth`` state dicts of timm, torchvision or transformers layouts, a kmedssl
            ``.keras``; docs/interop.md); ``"imagenet:PATH"`` also folds ImageNet's input normalisation into the
            first layer (for weights trained on ImageNet-normalised RGB).
        **overrides: any recipe field, e.g. ``mask_ratio=0.5``; the three run options above may also come
            here as strings (``--set on_nonfinite=skip``).

    Returns:
        ``PretrainResult(model, encoder, history, run_dir, recipe, resumed_from)``.

    Raises:
        ValueError: unknown method, size or field, a bad value, a resume with other settings.
        FileExistsError: ``output_dir`` holds something and neither ``resume`` nor ``overwrite`` is set, or
            ``overwrite`` would delete what is not a kmedssl run's (``runs.check_overwrite``).
        NonFiniteLossError: a NaN/Inf loss under ``on_nonfinite="stop"``.
        OutOfMemoryError: a training step ran out of memory.
    """
    check_backend(backend)
    engine = data_parallel(devices)  # first: TensorFlow's CPU split must precede its first op
    shortcuts = dict(epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, image_size=image_size)
    overrides.update({key: value for key, value in shortcuts.items() if value is not None})
    recipe_file = read_recipe_file(recipe, name) if recipe is not None else None
    if seed is None:
        seed = recipe_file.seed if recipe_file is not None and recipe_file.seed is not None else 0
    return run_pretraining(
        make_recipe(name, size, recipe=recipe_file, **overrides), seed, data=data, output_dir=output_dir,
        resume=resume, overwrite=overwrite, format=format, on_error=on_error, verbose=verbose,
        checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints, on_nonfinite=on_nonfinite,
        callbacks=callbacks, engine=engine, init=init,
    )


TASKS = ("classification", "segmentation", "landmarks", "correspondence")
DENSE_OPTIONS = ("data", "format", "labels", "structures", "baseline", "seed", "epochs", "output_dir", "progress",
                 "test_size", "train_size", "batch_size", "on_error")


def evaluate(encoder, *args, task="classification", **kwargs):
    """Evaluate a pretrained encoder (a run directory, an ``ENCODER.keras`` file or a Keras model) on ``task``.

    ``task="classification"`` (default): chest pathology labels by linear probe or fine-tuning, with every
    argument of ``kmedssl.eval.evaluate.evaluate`` (SPEC §5). ``"segmentation"``, ``"landmarks"``,
    ``"correspondence"``: the dense evaluations of ``kmedssl.eval.dense_tasks.evaluate_dense``, with its keyword
    arguments (``data``, ``format``, ``labels``, ``structures``, ``baseline="scratch"``, ``seed``, ``epochs``,
    ``output_dir``, ``progress``, ``test_size``, ...). Both load the encoder the same way and write their reports
    into the run's ``reports/`` folder.

    Raises:
        ValueError: an unknown task, or an argument the task does not take (e.g. ``protocol`` with a dense task).
    """
    if task == "classification":
        return evaluate_classification(encoder, *args, **kwargs)
    if task not in TASKS:
        raise ValueError(f"Expected task in {TASKS}. Received: task={task!r}")
    unknown = sorted(set(kwargs) - set(DENSE_OPTIONS))
    if args or unknown:
        raise ValueError(f"Expected keyword arguments from {list(DENSE_OPTIONS)} with task={task!r}. Received: "
                         f"{unknown if unknown else f'{len(args)} positional arguments'}")
    return evaluate_dense(encoder, task, **kwargs)


def check_backend(backend):
    """The backend is chosen before Keras is imported; here we can only check it."""
    if backend is not None and backend != keras.backend.backend():
        raise ValueError(
            f"Expected backend={backend!r} to match the active Keras backend {keras.backend.backend()!r}. "
            f"Set KERAS_BACKEND={backend} before importing kmedssl or keras (the CLI's --backend does this)."
        )
