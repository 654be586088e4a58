"""``pretrain``: one pretraining run from a recipe, written to a run directory (SPEC §8, §9)."""

import dataclasses
import pathlib

import keras
import numpy as np

from kmedssl.data.sources import open_source, split_records
from kmedssl.eval.monitor import ProbeMonitor
from kmedssl.ops.runtime import seed_everything
from kmedssl.recipes import runs
from kmedssl.recipes.callbacks import StopOnNonFiniteLoss
from kmedssl.recipes.registry import make_recipe


@dataclasses.dataclass
class PretrainResult:
    """What ``pretrain`` returns: the trained method model, its encoder, the loss history and the run dir."""

    model: keras.Model
    encoder: keras.Model
    history: dict
    run_dir: pathlib.Path
    recipe: object


def check_backend(backend):
    """The backend is chosen before Keras is imported; here we can only check it."""
    if backend is not None and backend != keras.backend.backend():
        raise ValueError(
            f"Expected backend={backend!r} to match the active Keras backend {keras.backend.backend()!r}. "
            f"Set KERAS_BACKEND={backend} before importing kmedssl or keras (the CLI's --backend does this)."
        )


def pretrain(name, data="phantom", size="phantom", epochs=None, steps_per_epoch=None, batch_size=None,
             image_size=None, seed=0, output_dir=None, resume=False, backend=None, overwrite=False,
             format=None, on_error="raise", verbose="auto", **overrides):
    """Pretrain method ``name`` and write its run directory.

    Args:
        name: one of ``kmedssl.recipes.list_methods()``.
        data: ``"phantom"`` (the embedded data set) or a path in one of ``kmedssl.data.formats.FORMATS``.
        size: ``"phantom"`` (CPU-minutes) or ``"paper"`` (the papers' settings).
        epochs, steps_per_epoch, batch_size, image_size: shortcuts for the recipe fields of those names.
        seed: seeds weights, data order, masks, partitions and augmentations.
        output_dir: run directory (default ``runs/<method>-<timestamp>``); an existing non-empty one needs
            ``overwrite=True``.
        resume: continuing a run is not supported by this version (must be False).
        backend: checked against the active Keras backend.
        format: the on-disk format of ``data`` (inferred when None).
        on_error: ``"raise"`` (a bad file or row raises ``DataError``) or ``"skip"`` (skipped and listed in
            the run directory's ``data_skipped.csv``).
        **overrides: any recipe field, e.g. ``mask_ratio=0.5``.

    Returns:
        ``PretrainResult(model, encoder, history, run_dir, recipe)``.
    """
    check_backend(backend)
    if resume:
        raise ValueError("Expected resume=False: resuming runs is not supported by this version.")
    shortcuts = dict(epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, image_size=image_size)
    overrides.update({key: value for key, value in shortcuts.items() if value is not None})
    recipe = make_recipe(name, size, **overrides)
    seed_everything(seed)

    source = open_source(data, kind=recipe.data_kind, size=recipe.data_size, seed=recipe.data_seed,
                         format=format, on_error=on_error)
    splits = split_records(source, seed=recipe.split_seed)
    dataset = recipe.training_data(source, splits["train"], seed, on_error=on_error)
    steps = min(recipe.steps_per_epoch or len(dataset), len(dataset))
    total_steps = steps * recipe.epochs

    encoder = recipe.build_encoder()
    model = recipe.build_model(encoder, total_steps=total_steps, seed=seed, num_labels=len(source.label_names))
    model.compile(optimizer=recipe.build_optimizer(total_steps, steps))

    run_dir = runs.prepare_run_dir(output_dir or runs.default_run_dir(name), overwrite=overwrite)
    runs.write_recipe(run_dir, recipe, seed)
    runs.write_environment(run_dir, seed, data=str(data), format=format)
    callbacks = [StopOnNonFiniteLoss(), *probe_monitor(recipe, source, splits["val"], seed),
                 keras.callbacks.CSVLogger(str(run_dir / runs.LOG_FILE))]
    history = model.fit(dataset, epochs=recipe.epochs, steps_per_epoch=steps, callbacks=callbacks,
                        shuffle=False, verbose=verbose)
    keras.saving.save_model(encoder, run_dir / runs.ENCODER_FILE)
    runs.write_skipped(run_dir, [*source.skipped, *dataset.skipped])
    return PretrainResult(model=model, encoder=encoder, history=history.history, run_dir=run_dir, recipe=recipe)


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
