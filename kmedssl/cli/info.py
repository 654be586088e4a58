"""``kmedssl info``: versions, backend, device, kernel path and data-parallel engine (SPEC §7)."""

import click

from kmedssl.cli.common import BACKENDS, use_backend


@click.command()
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
