"""``kmedssl bench``: the phantom benchmark (every method vs scratch and supervised) and step times (SPEC §7)."""

import pathlib
import runpy
import sys

import click

TRAIN_STEP_SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "train_step.py"


def parse_budgets(text):
    """``"0.1,1.0"`` -> ``(0.1, 1.0)``; a value with a dot is a fraction, one without a count of studies."""
    try:
        return tuple(float(v) if "." in v else int(v) for v in (v.strip() for v in text.split(",")) if v)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated counts or fractions, received {text!r}",
                                 param_hint="--labels") from None


def split_names(text):
    return tuple(v.strip() for v in text.split(",") if v.strip()) if text else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def bench():
    """Benchmarks: the phantom benchmark and per-method training step time.

    \b
    Example:
      kmedssl bench phantom --budget-minutes 2 --output runs/bench-phantom
      kmedssl bench train --methods spcl,mvmae --steps 5
    """


@bench.command()
@click.option("--methods", help="Comma-separated SSL methods (default: ace,mulsupcon,mvcon,mvmae,simclr,spcl).")
@click.option("--budget-minutes", type=float, default=2.0, show_default=True,
              help="Wall-clock minutes of optimisation steps per method (timed first, then run as epochs x steps).")
@click.option("--labels", default="0.1,1.0", show_default=True,
              help="Label budgets: fractions (with a dot) or counts of training studies, comma-separated.")
@click.option("--protocols", default="linear,finetune", show_default=True, help="Comma-separated protocols.")
@click.option("--output", type=click.Path(file_okay=False),
              help="Output directory (default runs/phantom-benchmark-TIME).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quick", is_flag=True, help="A tiny run (2 methods, 1 epoch of 2 steps) to check the pipeline.")
@click.option("--backend", type=click.Choice(["torch", "tensorflow", "jax"]),
              help="Keras backend (default: $KERAS_BACKEND or torch).")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def phantom(methods, budget_minutes, labels, protocols, output, overwrite, seed, quick, backend, debug):
    """Pretrain every SSL method with the same CPU budget, then compare linear-probe and fine-tuning macro
    AUROC against scratch and the supervised baseline, per view and label budget (paper 000 Table 1).

    Writes phantom_benchmark.md/.json/.csv and auroc_vs_budget_*.png to the output directory and prints
    the table.

    \b
    Example:
      kmedssl bench phantom --budget-minutes 2 --labels 0.1,1.0 --output runs/bench-phantom
    """
    from kmedssl.cli import run_user_command, use_backend  # here: kmedssl.cli imports this module

    use_backend(backend)
    from kmedssl.recipes.benchmark import DEFAULT_LABEL_BUDGETS, phantom_benchmark

    budgets = parse_budgets(labels)
    run_user_command(
        debug, phantom_benchmark, methods=split_names(methods), budget_minutes=budget_minutes,
        label_budgets=budgets or DEFAULT_LABEL_BUDGETS, protocols=split_names(protocols) or (), output_dir=output,
        seed=seed, quick=quick, overwrite=overwrite, log=click.echo,
    )


@bench.command()
@click.option("--methods", help="Comma-separated methods (default: every method).")
@click.option("--steps", type=int, default=10, show_default=True, help="Timed steps per method.")
@click.option("--warmup", type=int, default=3, show_default=True, help="Warm-up steps per method.")
@click.option("--backend", type=click.Choice(["torch", "tensorflow", "jax"]),
              help="Keras backend (default: $KERAS_BACKEND or torch).")
def train(methods, steps, warmup, backend):
    """Training step time and images/s of every method at the phantom size (runs benchmarks/train_step.py).

    \b
    Example:
      kmedssl bench train --methods spcl,mvmae --steps 5 --backend torch
    """
    from kmedssl.cli import use_backend  # here: kmedssl.cli imports this module

    use_backend(backend)
    if not TRAIN_STEP_SCRIPT.is_file():
        raise click.ClickException(f"{TRAIN_STEP_SCRIPT} not found: `kmedssl bench train` needs a source checkout "
                                   "(pip install -e .)")
    argv = [str(TRAIN_STEP_SCRIPT), "--steps", str(steps), "--warmup", str(warmup)]
    if methods:
        argv += ["--methods", methods]
    saved, sys.argv = sys.argv, argv
    try:
        runpy.run_path(str(TRAIN_STEP_SCRIPT), run_name="__main__")
    finally:
        sys.argv = saved
