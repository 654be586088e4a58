"""``kmedssl pretrain METHOD``: pretrain a method and write its run directory (SPEC §7)."""

import os

import click

from kmedssl.cli.common import BACKENDS, run_user_command, use_backend
from kmedssl.data.formats import FORMATS  # keras-free: the backend is chosen later

# pretrain() arguments that have their own option: `--set` cannot set them.
OWN_OPTIONS = ("data", "format", "on_error", "size", "seed", "output_dir", "resume", "overwrite", "backend",
               "verbose", "callbacks", "devices", "recipe", "init")


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


@click.command()
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
@click.option("--jit-compile", type=click.Choice(["auto", "true", "false"]),
              help="Compile the training step: true = torch.compile on torch (eager, with a one-line notice, where "
                   "it cannot compile), XLA on jax/tensorflow; auto = Keras's choice. [default: the recipe's, auto]")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]),
              help="Compute dtype of the layers (weights, optimizer state and losses stay float32; fp16 adds loss "
                   "scaling). [default: the recipe's, fp32]")
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
@click.option("--init", metavar="[imagenet:|radimagenet:]PATH",
              help="Start the encoder from a weights file instead of random weights: timm/torchvision/transformers/"
                   "MONAI/RadImageNet state dicts (.safetensors, .pth), KerasHub or kmedssl .keras (docs/interop.md); "
                   "imagenet:PATH / radimagenet:PATH fold that input normalisation into the first layer. A ResNet-50 "
                   "file needs --set resnet_depth=50 --set resnet_stem=imagenet (simclr, mulsupcon).")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def pretrain(method, data, data_format, on_error, size, recipe_file, sets, epochs, steps_per_epoch, batch_size,
             image_size, jit_compile, precision, backend, output, resume, overwrite, checkpoint_every, seed, devices, init, debug):
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
                   jit_compile=jit_compile, precision=precision, checkpoint_every=checkpoint_every)
    overrides.update({key: value for key, value in options.items() if value is not None})
    result = run_user_command(
        debug, recipes.pretrain, method, data=data, size=size, seed=seed, output_dir=output, resume=resume,
        overwrite=overwrite, format=data_format, on_error=on_error, devices=devices, recipe=recipe_file, init=init,
        **overrides,
    )
    if int(os.environ.get("RANK", "0")) != 0:  # a torchrun process other than the first: it wrote nothing
        return
    if result.resumed_from is not None:
        click.echo(f"Resumed {result.run_dir} at step {result.resumed_from}")
    losses = {k: v[-1] for k, v in result.history.items() if k.endswith("loss")}
    skipped = result.history.get("skipped_steps", [0])[-1]
    click.echo(f"Run written to {result.run_dir} (final " + ", ".join(f"{k}={v:.4f}" for k, v in losses.items())
               + (f"; {skipped:.0f} non-finite steps skipped" if skipped else "") + ")")
