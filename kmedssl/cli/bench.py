"""``kmedssl bench``: the phantom benchmark (every method vs scratch and supervised), per-method training step
times and kernel microbenchmarks (SPEC §7). The benchmarks are ``kmedssl.bench`` modules, imported only when
a command runs (after the backend is chosen)."""

import os

import click

from kmedssl.bench import kernels as kernel_benchmark  # both keras-free until their main() runs
from kmedssl.bench import train_step
from kmedssl.cli.common import BACKENDS, CONTEXT_SETTINGS, run_user_command, split_names, use_backend
from kmedssl.cli.evaluate import ProgressDisplay


def parse_budgets(text, param_hint):
    """``"0.1,1.0"`` -> ``(0.1, 1.0)``; a value with a dot is a fraction, one without a count of studies; None
    for a missing option."""
    if text is None:
        return None
    try:
        return tuple(float(v) if "." in v else int(v) for v in (v.strip() for v in text.split(",")) if v)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated counts or fractions, received {text!r}",
                                 param_hint=param_hint) from None


class BenchmarkDisplay(ProgressDisplay):
    """``ProgressDisplay`` that also prints log lines (``echo``) on stdout: on a terminal the bar's line is
    cleared first and drawn again below the log line."""

    def echo(self, line):
        if self.bar is None:
            click.echo(line)
            return
        self.stream.write("\r\033[K")
        click.echo(line)
        self.stream.write("\r" + self.bar.format_progress_line())
        self.stream.flush()


@click.group(context_settings=CONTEXT_SETTINGS)
def bench():
    """Benchmarks: the phantom benchmark, per-method training step time and kernel microbenchmarks.

    \b
    Example:
      kmedssl bench phantom --budget-minutes 2 --output runs/bench-phantom
      kmedssl bench train --methods spcl,mvmae --steps 5
    """


@bench.command()
@click.option("--methods", help="Comma-separated SSL methods (default: ace,mulsupcon,mvcon,mvmae,simclr,spcl).")
@click.option("--budget-minutes", type=float, default=5.0, show_default=True,
              help="Wall-clock minutes of optimisation steps per method (timed first, then run as epochs x steps).")
@click.option("--linear-labels", show_default="0.1,1.0; --quick: 0.2",
              help="Label budgets of the linear probe (on every view): fractions (with a dot) or counts of training "
                   "studies, comma-separated.")
@click.option("--finetune-labels", show_default="0.1; --quick: 0.2",
              help="Label budgets of fine-tuning (~100x the cost of a linear probe), comma-separated.")
@click.option("--finetune-views", default="frontal", show_default=True,
              help="Comma-separated views fine-tuned (frontal, lateral, ensemble; ensemble fine-tunes both).")
@click.option("--protocols", default="linear,finetune", show_default=True, help="Comma-separated protocols.")
@click.option("--test-size", type=click.IntRange(min=1), show_default="2000; --quick: 100",
              help="Studies of the phantom test cohort every encoder is scored on (rendered once, then cached).")
@click.option("--output", type=click.Path(file_okay=False),
              help="Output directory (default runs/phantom-benchmark-TIME).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output directory.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of pretraining, scratch weights, label budgets and probes.")
@click.option("--data-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the phantom cohort the methods pretrain and the probes train on (the test cohort is fixed).")
@click.option("--quick", is_flag=True, help="A tiny run (2 methods, 1 epoch of 2 steps, fine-tuning for 1 epoch) to "
                                            "check the pipeline.")
@click.option("--backend", type=click.Choice(BACKENDS), help="Keras backend (default: $KERAS_BACKEND or torch).")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def phantom(methods, budget_minutes, linear_labels, finetune_labels, finetune_views, protocols, test_size, output,
            overwrite, seed, data_seed, quick, backend, debug):
    """Pretrain every SSL method with the same CPU budget, then compare linear-probe and fine-tuning macro
    AUROC against scratch and the supervised baseline (paper 000 Table 1), with a progress bar and the time
    left on stderr.

    Each protocol has its own label budgets and views: by default the linear probe at 10 % and 100 % labels on
    the frontal, lateral and ensemble views, and fine-tuning (~100x costlier) at 10 % labels on the frontal
    view, the cells the phantom recipes are judged on; the last column says whether a row's paired 95 % CI with scratch is above
    0 in every frontal cell. Writes phantom_benchmark.md/.json/.csv and auroc_vs_budget_*.png to the output
    directory and prints the table.

    \b
    Example:
      kmedssl bench phantom --budget-minutes 2 --output runs/bench-phantom
      kmedssl bench phantom --linear-labels 0.1,1.0 --finetune-labels 0.1,1.0 --finetune-views frontal,lateral
    """
    use_backend(backend)
    from kmedssl.bench.phantom import phantom_benchmark

    display = BenchmarkDisplay("Phantom benchmark")
    try:
        run_user_command(
            debug, phantom_benchmark, methods=split_names(methods), budget_minutes=budget_minutes,
            linear_budgets=parse_budgets(linear_labels, "--linear-labels"),
            finetune_budgets=parse_budgets(finetune_labels, "--finetune-labels"),
            finetune_views=split_names(finetune_views) or (), protocols=split_names(protocols) or (),
            test_size=test_size, output_dir=output, seed=seed, data_seed=data_seed, quick=quick, overwrite=overwrite, log=display.echo,
            progress=display,
        )
    finally:
        display.close()


@bench.command()
@click.option("--methods", help="Comma-separated methods (default: every method).")
@click.option("--sizes", default="phantom,vit-s16", show_default=True,
              help="phantom: each method's phantom recipe; vit-s16: ViT-S/16 at 224 px for every method; vit-b16: "
                   "ViT-B/16 at 224 px (batch 128) with the papers' method settings; vit-b16-512: ViT-B/16 at "
                   "512 px (batch 64), S-PCL's pretraining size.")
@click.option("--backend", "--backends", "backends", default="torch,tensorflow,jax", show_default=True,
              help="Comma-separated Keras backends (each measurement runs in its own process).")
@click.option("--batch-size", type=int, help="Batch size of every method (default: the recipe's; 16 at vit-s16, "
              "128 at vit-b16, 64 at vit-b16-512).")
@click.option("--steps", type=int, default=5, show_default=True, help="Timed steps per measurement.")
@click.option("--warmup", type=int, default=2, show_default=True,
              help="Untimed steps first (at least 1; the first one traces and compiles).")
@click.option("--jit-compile", default="auto", show_default=True,
              help="Comma-separated modes: auto (Keras's default), true (XLA; torch.compile on torch), false.")
@click.option("--precision", default="fp32", show_default=True,
              help="Comma-separated recipe precisions: fp32, bf16, fp16 (layers in bf16/fp16, weights in float32).")
@click.option("--plain-torch", is_flag=True,
              help="Also time the same step in plain PyTorch (spcl, mvmae, simclr) and print the ratio kmedssl / "
                   "plain per row. Needs the plain_torch package of a source checkout on PYTHONPATH (its "
                   "train_step.py wrapper script sets that up).")
@click.option("--peak-tflops", type=float, help="Peak TFLOP/s for the MFU column (default: the GPU's dense peak for "
              "the step's arithmetic from the table of known GPUs; n/a on a CPU).")
@click.option("--threads", type=int, help="Threads of torch and TensorFlow; JAX keeps XLA's own pool (default: "
              "$OMP_NUM_THREADS or all cores).")
@click.option("--timeout", type=float, help="Seconds per measurement before it is reported as timed out "
              "(default 3600).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="CSV output (default "
              "runs/bench-train-TIME.csv).")
def train(methods, sizes, backends, batch_size, steps, warmup, jit_compile, precision, plain_torch, peak_tflops,
          threads, timeout, csv_path):
    """Per-method training step: median step time, images/s, peak memory, analytic GFLOPs per image, achieved
    TFLOP/s and MFU, per backend, size, jit mode and precision, optionally against plain PyTorch
    (kmedssl.bench.train_step; prints a table and writes a CSV).

    \b
    Example:
      kmedssl bench train --methods spcl,mvmae --sizes phantom --backend torch,jax --steps 5
      kmedssl bench train --sizes vit-s16 --batch-size 32 --jit-compile auto,true --csv runs/train.csv
      kmedssl bench train --methods spcl,mvmae,simclr --sizes vit-b16 --backend torch --precision fp32,bf16 \\
          --jit-compile auto,true --plain-torch
    """
    argv = ["--sizes", sizes, "--backends", backends, "--steps", str(steps), "--warmup", str(warmup),
            "--jit-compile", jit_compile, "--precision", precision]
    for flag, value in (("--methods", methods), ("--batch-size", batch_size), ("--threads", threads),
                        ("--peak-tflops", peak_tflops), ("--timeout", timeout), ("--csv", csv_path)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--plain-torch"] if plain_torch else []
    train_step.main(argv)


# === kmedssl bench kernels ===


def checked_names(text, allowed, param_hint):
    """``"tsp,ace"`` -> ``"tsp,ace"`` after checking every name against ``allowed``."""
    names = split_names(text) or ()
    if not names or any(name not in allowed for name in names):
        raise click.BadParameter(f"expected comma-separated names from {', '.join(allowed)}, received {text!r}",
                                 param_hint=param_hint)
    return ",".join(names)


def checked_integers(text, param_hint):
    """``"1024,4096"`` -> ``"1024,4096"`` after checking that every value is a positive integer."""
    values = split_names(text) or ()
    if not values or not all(v.isdigit() and int(v) > 0 for v in values):
        raise click.BadParameter(f"expected comma-separated positive integers, received {text!r}",
                                 param_hint=param_hint)
    return ",".join(values)


@bench.command()
@click.option("--op", "ops", default=",".join(kernel_benchmark.OPS), show_default=True,
              help="Comma-separated ops: tsp (T-SP InfoNCE), supcon (Jaccard SupCon), ace (ACE matching loss), "
                   "partition (random token partition).")
@click.option("--sizes", help="Comma-separated sizes: rows 2N for tsp and supcon, batch for ace and partition "
                              "(default: a sweep per device, docs/kernels.md).")
@click.option("--dims", help="Comma-separated feature widths: D for tsp and supcon, C for ace.")
@click.option("--paths", default=",".join(kernel_benchmark.PATHS), show_default=True,
              help="naive (keras.ops, plain matrices), blocked (keras.ops, row-blocked), triton (fused kernels).")
@click.option("--modes", default=",".join(kernel_benchmark.MODES), show_default=True, help="Comma-separated modes.")
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]),
              help="Input dtype (default: bfloat16 on a GPU, float32 on CPU).")
@click.option("--repeats", type=int, default=10, show_default=True, help="Timed repeats per case (median).")
@click.option("--interpret", is_flag=True, help="Run the Triton kernels on CPU in Triton's interpreter (tiny sizes).")
@click.option("--cpu-memory", is_flag=True,
              help="Peak extra memory of the row-blocked losses at 2N = 32768, D = 256 on each backend (CPU).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False),
              help="CSV output (default bench_kernels_BACKEND_DEVICE.csv in the current directory).")
@click.option("--backend", type=click.Choice(BACKENDS),
              help="Keras backend of the keras.ops paths (default: $KERAS_BACKEND or torch; Triton needs torch).")
def kernels(ops, sizes, dims, paths, modes, dtype, repeats, interpret, cpu_memory, csv_path, backend):
    """Kernel microbenchmarks: median time, peak memory, max error, and ratios to the naive path and to the
    H100 roofline, per op, path, mode and size; prints a table and writes a CSV (kmedssl.bench.kernels).

    \b
    Example:
      kmedssl bench kernels --op tsp --sizes 1024,4096 --dims 128 --backend jax
      kmedssl bench kernels --interpret --op tsp,supcon --sizes 64 --dims 16
      kmedssl bench kernels --cpu-memory
    """
    argv = ["--op", checked_names(ops, kernel_benchmark.OPS, "--op"),
            "--paths", checked_names(paths, kernel_benchmark.PATHS, "--paths"),
            "--modes", checked_names(modes, kernel_benchmark.MODES, "--modes"), "--repeats", str(repeats)]
    argv += ["--sizes", checked_integers(sizes, "--sizes")] if sizes else []
    argv += ["--dims", checked_integers(dims, "--dims")] if dims else []
    argv += ["--dtype", dtype] if dtype else []
    argv += ["--csv", csv_path] if csv_path else []
    argv += ["--interpret"] if interpret else []
    argv += ["--cpu-memory"] if cpu_memory else []
    if interpret:
        os.environ["TRITON_INTERPRET"] = "1"  # before use_backend imports Triton
    use_backend(backend)
    kernel_benchmark.main(argv)
