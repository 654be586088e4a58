"""The ``kmedssl`` command (SPEC §7). Keras is imported only after ``--backend`` has been applied."""

import importlib
import importlib.util
import os
import sys

import click

from kmedssl.data.formats import FORMATS  # keras-free: the backend is chosen later

BACKENDS = ("torch", "tensorflow", "jax")
# DataError and CheckpointError are ValueErrors, NonFiniteLossError is a FloatingPointError and OutOfMemoryError
# a MemoryError.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, FloatingPointError, OSError, MemoryError)


def use_backend(backend):
    """Select the Keras backend before Keras is imported (env var, then ``--backend``, default torch)."""
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("KERAS_BACKEND", "torch")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != os.environ["KERAS_BACKEND"]:
        raise click.UsageError("--backend must be chosen before Keras is imported")
    if os.environ["KERAS_BACKEND"] == "torch" and importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton")  # before anything imports TensorFlow (SPEC §10)


def run_user_command(debug, function, *args, **kwargs):
    """Run ``function``; a user mistake becomes one line on stderr and exit code 1 (``--debug``: traceback)."""
    try:
        return function(*args, **kwargs)
    except USER_ERRORS as error:
        if debug:
            raise
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)


# pretrain() arguments that have their own option: `--set` cannot set them.
OWN_OPTIONS = ("data", "format", "on_error", "size", "seed", "output_dir", "resume", "overwrite", "backend",
               "verbose", "callbacks", "devices", "recipe")


def parse_sets(values):
    """``--set key=value`` pairs -> dict (values stay strings; the recipe converts them)."""
    overrides = {}
    for item in values:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, received {item!r}", param_hint="--set")
        if key in OWN_OPTIONS:
            option = "--output" if key == "output_dir" else "--" + key.replace("_", "-")
            raise click.BadParameter(f"{key} has its own option, use {option}", param_hint="--set")
        overrides[key] = value.strip()
    return overrides


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """kmedssl: self-supervised pretraining of medical image encoders (Keras 3: torch, tensorflow, jax).

    \b
    Example:
      kmedssl pretrain spcl --data phantom --size phantom --output runs/spcl
      kmedssl evaluate runs/spcl --baseline random
    """


@main.command()
@click.argument("method")
@click.option("--data", default="phantom", show_default=True, help="'phantom' (the embedded data set) or a data path.")
@click.option("--format", "data_format", type=click.Choice(FORMATS), help="Format of --data PATH (inferred if omitted).")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
              help="Bad files or rows: stop with an error, or skip them (listed in the run's data_skipped.csv).")
@click.option("--size", type=click.Choice(["phantom", "paper"]),
              help="phantom: CPU-minutes settings; paper: the papers' settings. [default: the --recipe file's "
                   "size, else phantom]")
@click.option("--recipe", "recipe_file", type=click.Path(dir_okay=False), metavar="FILE.toml",
              help="Recipe file over the size's settings: one of the top-level recipes/ folder (e.g. "
                   "paper/spcl-mimic-cxr.toml) or a run's recipe.toml (reproduces the run); --set, --epochs, "
                   "--steps-per-epoch, --batch-size, --image-size and --seed override it.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any recipe field (repeatable).")
@click.option("--epochs", type=int, help="Number of epochs.")
@click.option("--steps-per-epoch", type=int, help="Steps per epoch (default: one pass over the data).")
@click.option("--batch-size", type=int, help="Batch size.")
@click.option("--image-size", type=int, help="Input image size in pixels.")
@click.option("--backend", type=click.Choice(BACKENDS), help="Keras backend (default: $KERAS_BACKEND or torch).")
@click.option("--output", type=click.Path(file_okay=False), help="Run directory (default runs/METHOD-TIMESTAMP).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --output from its newest checkpoint (same command and settings).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing kmedssl run directory (refused for a folder holding anything else).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), metavar="STEPS",
              help="Also checkpoint every STEPS training steps (always at each epoch end).")
@click.option("--seed", type=int,
              help="Seed of weights, data order and views. [default: the --recipe file's seed, else 0]")
@click.option("--devices", type=click.IntRange(min=1), metavar="N",
              help="Data-parallel devices (docs/distributed.md): jax and tensorflow use N local devices; torch "
                   "needs one process per device, e.g. torchrun --nproc_per_node N -m kmedssl.cli pretrain ... "
                   "--devices N. --batch-size is the global batch.")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def pretrain(method, data, data_format, on_error, size, recipe_file, sets, epochs, steps_per_epoch, batch_size,
             image_size, backend, output, resume, overwrite, checkpoint_every, seed, devices, debug):
    """Pretrain METHOD (ace, mulsupcon, mvcon, mvmae, simclr, spcl, supervised) and write a run directory.

    A run killed at any moment continues with the same command plus --resume and ends with the weights of
    an uninterrupted run. Run options for --set: keep_checkpoints=K (default 3, 0 keeps all),
    on_nonfinite=stop|skip (stop at the first NaN/Inf loss, or undo and count such steps).

    \b
    Examples:
      kmedssl pretrain spcl --data phantom --size phantom --epochs 5 --set mask_ratio=0.5 --output runs/spcl
      kmedssl pretrain ace --recipe recipes/paper/ace-chestxray14.toml --data /data/chestxray14 --output runs/ace
      kmedssl pretrain spcl --recipe runs/spcl/recipe.toml --output runs/spcl-again   # the same run again
      kmedssl pretrain mvmae --data /data/mimic-cxr-jpg --format mimic-cxr --size paper --checkpoint-every 500 \\
          --output runs/mvmae          # after an interruption: the same command plus --resume
      kmedssl pretrain simclr --backend jax --devices 8 --batch-size 1024   # 8 GPUs, negatives from all of them
      torchrun --nproc_per_node 4 -m kmedssl.cli pretrain spcl --backend torch --devices 4
    """
    use_backend(backend)
    if (devices and devices > 1 and os.environ["KERAS_BACKEND"] == "jax"
            and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", "")):
        # JAX on CPU: N host devices (read when JAX starts; it does not change the GPUs a GPU machine uses)
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    overrides = parse_sets(sets)
    from kmedssl import recipes

    options = dict(epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, image_size=image_size,
                   checkpoint_every=checkpoint_every)
    overrides.update({key: value for key, value in options.items() if value is not None})
    result = run_user_command(
        debug, recipes.pretrain, method, data=data, size=size, seed=seed, output_dir=output, resume=resume,
        overwrite=overwrite, format=data_format, on_error=on_error, devices=devices, recipe=recipe_file, **overrides,
    )
    if int(os.environ.get("RANK", "0")) != 0:  # a torchrun process other than the first: it wrote nothing
        return
    if result.resumed_from is not None:
        click.echo(f"Resumed {result.run_dir} at step {result.resumed_from}")
    losses = {k: v[-1] for k, v in result.history.items() if k.endswith("loss")}
    skipped = result.history.get("skipped_steps", [0])[-1]
    click.echo(f"Run written to {result.run_dir} (final " + ", ".join(f"{k}={v:.4f}" for k, v in losses.items())
               + (f"; {skipped:.0f} non-finite steps skipped" if skipped else "") + ")")


@main.command()
@click.argument("source", metavar="RUN_DIR|ENCODER.keras")
@click.option("--data", default="phantom", show_default=True, help="'phantom' or a labelled chest X-ray data path.")
@click.option("--format", "data_format", type=click.Choice(FORMATS), help="Format of --data PATH (inferred if omitted).")
@click.option("--protocol", type=click.Choice(["linear", "finetune"]), default="linear", show_default=True,
              help="linear: frozen features + logistic regression; finetune: paper 001 Table 3 fine-tuning.")
@click.option("--labels", help="Label budget: a number of studies (e.g. 200) or a fraction (e.g. 0.1); a comma list "
                               "(e.g. 50,100,all) evaluates each and draws reports/auroc_vs_budget.png.")
@click.option("--views", default="frontal,lateral,ensemble", show_default=True, help="Comma-separated views.")
@click.option("--baseline", type=click.Choice(["random"]), help="Also probe a randomly initialised copy.")
@click.option("--test-data", help="Cross-source: fit on --data's training split, score on this data's test split.")
@click.option("--test-format", type=click.Choice(FORMATS), help="Format of --test-data PATH (inferred if omitted).")
@click.option("--cv", help="Repeated k-fold on the training split, FOLDSxREPEATS (paper 001: 5x10).")
@click.option("--compare", help="With --cv: another RUN_DIR|ENCODER.keras (or 'random'), Wilcoxon-tested.")
@click.option("--property-probes", is_flag=True,
              help="Also run ACE's property probes (compositionality, decompositionality, retrieval; paper 004).")
@click.option("--backend", type=click.Choice(BACKENDS), help="Keras backend (default: $KERAS_BACKEND or torch).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def evaluate(source, data, data_format, protocol, labels, views, baseline, test_data, test_format, cv, compare,
             property_probes, backend, seed, debug):
    """Linear-probe (or fine-tune) a pretrained encoder on chest pathology labels and print macro AUROCs.

    \b
    Examples:
      kmedssl evaluate runs/spcl --baseline random --labels 0.1
      kmedssl evaluate runs/spcl --labels 0.01,0.1,1.0
      kmedssl evaluate runs/spcl --data /data/mimic-cxr-jpg --test-data /data/chexpert
      kmedssl evaluate runs/spcl --cv 5x10 --compare runs/simclr
      kmedssl evaluate runs/ace --baseline random --property-probes
    """
    use_backend(backend)
    from kmedssl import recipes

    budget = None
    if labels is not None:
        try:
            parts = [p.strip() for p in labels.split(",")]
            budgets = [None if p == "all" else float(p) if "." in p else int(p) for p in parts]
        except ValueError:
            raise click.BadParameter(f"expected N, FRACTION or a comma list of them, received {labels!r}",
                                     param_hint="--labels") from None
        budget = budgets if "," in labels else budgets[0]
    folds = repeats = None
    if cv is not None:
        folds_text, sep, repeats_text = cv.lower().partition("x")
        if not (sep and folds_text.strip().isdigit() and repeats_text.strip().isdigit()):
            raise click.BadParameter(f"expected FOLDSxREPEATS such as 5x10, received {cv!r}", param_hint="--cv")
        folds, repeats = int(folds_text), int(repeats_text)
    report = run_user_command(
        debug, recipes.evaluate, source, data=data, protocol=protocol, labels=budget,
        views=[v.strip() for v in views.split(",") if v.strip()], seed=seed, baseline=baseline, format=data_format,
        test_data=test_data, test_format=test_format, folds=folds, repeats=repeats, compare=compare,
        property_probes=property_probes,
    )
    name = "Linear probe" if protocol == "linear" else "Fine-tuning"
    if "cv" in report:
        result = report["cv"]
        click.echo(f"{name}, {result['repeats']} x {result['folds']}-fold cross-validation on {result['view']} "
                   f"images of {data}: mean (std) of the per-repeat macro AUROC")
        for entry in result["methods"]:
            click.echo(f"{entry['name']:<24} {entry['mean']:.4f} ({entry['std']:.4f})")
        if "wilcoxon" in result:
            click.echo(f"Wilcoxon signed-rank (two-sided, paired): p = {result['wilcoxon']['p_value']:.4g}")
        return
    tested = f"{data} -> {test_data}" if test_data else data
    click.echo(f"{name}, macro AUROC over {len(report['per_label_auroc'])} labels of {tested}")
    if "budgets" in report:
        click.echo(f"{'labels':<10} {'pretrained':>11}" + (f" {'random init':>12}" if baseline else ""))
        for entry in report["budgets"]:
            budget = "all" if entry["labels"] is None else format(entry["labels"], "g")
            line = f"{budget:<10} {entry['macro_auroc']:>11.4f}"
            if baseline:
                line += f" {entry['baseline_macro_auroc']:>12.4f}"
            click.echo(line)
        click.echo(f"Views at the last budget ({report['budgets'][-1]['labels']}):")
    header = f"{'view':<10} {'pretrained':>11}" + (f" {'random init':>12}" if baseline else "")
    click.echo(header)
    for view, entry in report["views"].items():
        line = f"{view:<10} {entry['macro_auroc']:>11.4f}"
        if baseline:
            line += f" {report['baseline']['views'][view]['macro_auroc']:>12.4f}"
        click.echo(line)
    if property_probes:
        click.echo("ACE property probes (frontal test images; chance = 1 / batch):")
        for role, entry in report["property_probes"].items():
            name = "pretrained" if role == "encoder" else "random init"
            click.echo(f"{name:<12} compositionality cos {entry['compositionality_mean_cosine']['4']:.4f}, "
                       f"decompositionality acc {entry['decompositionality_accuracy']:.4f}, "
                       f"retrieval acc {entry['retrieval_accuracy']:.4f} (chance {entry['chance']:.4f})")


@main.command()
@click.option("--backend", type=click.Choice(BACKENDS), help="Keras backend (default: $KERAS_BACKEND or torch).")
def info(backend):
    """Versions, backend and device."""
    use_backend(backend)
    import keras

    import kmedssl
    from kmedssl.ops.runtime import device_description

    click.echo(f"kmedssl {kmedssl.__version__}, keras {keras.__version__}, backend {keras.backend.backend()}")
    click.echo(f"device: {device_description()}")
    from kmedssl.ops.kernels import describe_kernel_path

    click.echo(f"kernels: {describe_kernel_path()}")
    from kmedssl.distributed.strategy import describe_data_parallel

    click.echo(f"data parallel: {describe_data_parallel()}")


from kmedssl.commands.bench import bench  # noqa: E402  (`kmedssl bench`; keras imported only when run)
from kmedssl.commands.data import data  # noqa: E402  (the `kmedssl data` group; keras-free)

main.add_command(bench)
main.add_command(data)

if __name__ == "__main__":
    main()
