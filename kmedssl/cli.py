"""The ``kmedssl`` command (SPEC §7). Keras is imported only after ``--backend`` has been applied."""

import os
import sys

import click

from kmedssl.data.formats import FORMATS  # keras-free: the backend is chosen later

BACKENDS = ("torch", "tensorflow", "jax")
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, FloatingPointError, OSError)  # DataError is a ValueError


def use_backend(backend):
    """Select the Keras backend before Keras is imported (env var, then ``--backend``, default torch)."""
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("KERAS_BACKEND", "torch")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != os.environ["KERAS_BACKEND"]:
        raise click.UsageError("--backend must be chosen before Keras is imported")


def run_user_command(debug, function, *args, **kwargs):
    """Run ``function``; a user mistake becomes one line on stderr and exit code 1 (``--debug``: traceback)."""
    try:
        return function(*args, **kwargs)
    except USER_ERRORS as error:
        if debug:
            raise
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)


def parse_sets(values):
    """``--set key=value`` pairs -> dict (values stay strings; the recipe converts them)."""
    overrides = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, received {item!r}", param_hint="--set")
        overrides[key.strip()] = value.strip()
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
@click.option("--size", type=click.Choice(["phantom", "paper"]), default="phantom", show_default=True,
              help="phantom: CPU-minutes settings; paper: the papers' settings.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override any recipe field (repeatable).")
@click.option("--epochs", type=int, help="Number of epochs.")
@click.option("--steps-per-epoch", type=int, help="Steps per epoch (default: one pass over the data).")
@click.option("--batch-size", type=int, help="Batch size.")
@click.option("--image-size", type=int, help="Input image size in pixels.")
@click.option("--backend", type=click.Choice(BACKENDS), help="Keras backend (default: $KERAS_BACKEND or torch).")
@click.option("--output", type=click.Path(file_okay=False), help="Run directory (default runs/METHOD-TIMESTAMP).")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of weights, data order and views.")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def pretrain(method, data, data_format, on_error, size, sets, epochs, steps_per_epoch, batch_size, image_size,
             backend, output, overwrite, seed, debug):
    """Pretrain METHOD (ace, mulsupcon, mvcon, mvmae, simclr, spcl, supervised) and write a run directory.

    \b
    Examples:
      kmedssl pretrain spcl --data phantom --size phantom --epochs 5 --set mask_ratio=0.5 --output runs/spcl
      kmedssl pretrain mvmae --data /data/mimic-cxr-jpg --format mimic-cxr --size paper
    """
    use_backend(backend)
    overrides = parse_sets(sets)
    from kmedssl import recipes

    result = run_user_command(
        debug, recipes.pretrain, method, data=data, size=size, epochs=epochs, steps_per_epoch=steps_per_epoch,
        batch_size=batch_size, image_size=image_size, seed=seed, output_dir=output, overwrite=overwrite,
        format=data_format, on_error=on_error, **overrides,
    )
    losses = {k: v[-1] for k, v in result.history.items() if k.endswith("loss")}
    click.echo(f"Run written to {result.run_dir} (final " + ", ".join(f"{k}={v:.4f}" for k, v in losses.items()) + ")")


@main.command()
@click.argument("source", metavar="RUN_DIR|ENCODER.keras")
@click.option("--data", default="phantom", show_default=True, help="'phantom' or a labelled chest X-ray data path.")
@click.option("--format", "data_format", type=click.Choice(FORMATS), help="Format of --data PATH (inferred if omitted).")
@click.option("--protocol", type=click.Choice(["linear", "finetune"]), default="linear", show_default=True,
              help="linear: frozen features + logistic regression; finetune: paper 001 Table 3 fine-tuning.")
@click.option("--labels", help="Label budget: a number of studies (e.g. 200) or a fraction (e.g. 0.1).")
@click.option("--views", default="frontal,lateral,ensemble", show_default=True, help="Comma-separated views.")
@click.option("--baseline", type=click.Choice(["random"]), help="Also probe a randomly initialised copy.")
@click.option("--backend", type=click.Choice(BACKENDS), help="Keras backend (default: $KERAS_BACKEND or torch).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def evaluate(source, data, data_format, protocol, labels, views, baseline, backend, seed, debug):
    """Linear-probe (or fine-tune) a pretrained encoder on chest pathology labels and print macro AUROCs.

    \b
    Example:
      kmedssl evaluate runs/spcl --baseline random --labels 0.1
    """
    use_backend(backend)
    from kmedssl import recipes

    budget = None
    if labels is not None:
        budget = float(labels) if "." in labels else int(labels)
    report = run_user_command(
        debug, recipes.evaluate, source, data=data, protocol=protocol, labels=budget,
        views=[v.strip() for v in views.split(",") if v.strip()], seed=seed, baseline=baseline, format=data_format,
    )
    header = f"{'view':<10} {'pretrained':>11}" + (f" {'random init':>12}" if baseline else "")
    click.echo(f"{'Linear probe' if protocol == 'linear' else 'Fine-tuning'}, macro AUROC over {len(report['per_label_auroc'])} labels of {data}")
    click.echo(header)
    for view, entry in report["views"].items():
        line = f"{view:<10} {entry['macro_auroc']:>11.4f}"
        if baseline:
            line += f" {report['baseline']['views'][view]['macro_auroc']:>12.4f}"
        click.echo(line)


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
    click.echo("kernels: keras.ops reference implementations (no Triton kernels in this version)")


from kmedssl.commands.data import data  # noqa: E402  (the `kmedssl data` group; keras-free)

main.add_command(data)

if __name__ == "__main__":
    main()
