"""``kmedssl export RUN_DIR|ENCODER.keras --to TARGET --out DIR``: an encoder's weights for another library
(docs/interop.md)."""

import click

from kmedssl.cli.common import BACKENDS, run_user_command, use_backend
from kmedssl.interop.checkpoints import TARGETS  # keras-free: the backend is chosen later


@click.command()
@click.argument("source", metavar="RUN_DIR|ENCODER.keras")
@click.option("--to", "target", type=click.Choice(TARGETS), required=True,
              help="safetensors: kmedssl names; timm / transformers: a ViT; torchvision / transformers: a ResNet "
                   "(18 or 50); monai: either; onnx: the graph of encoder.features (torch backend).")
@click.option("--out", type=click.Path(file_okay=False), required=True, metavar="DIR",
              help="Folder for model.safetensors (onnx: model.onnx), config.json and kmedssl.json (created if "
                   "missing).")
@click.option("--backend", type=click.Choice(BACKENDS), help="Keras backend (default: $KERAS_BACKEND or torch).")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def export(source, target, out, backend, debug):
    """Write the encoder of RUN_DIR (or ENCODER.keras) as a state dict another library loads without kmedssl.

    \b
    Examples:
      kmedssl export runs/spcl --to transformers --out exports/spcl-hf   # ViTModel.from_pretrained(...)
      kmedssl export runs/simclr/encoder.keras --to torchvision --out exports/simclr-tv
      kmedssl export runs/spcl --to safetensors --out exports/spcl       # kmedssl names, any framework
      kmedssl export runs/spcl --to onnx --out exports/spcl-onnx --backend torch   # onnxruntime, any batch
    """
    use_backend(backend)

    def run():
        from kmedssl.interop import export as export_encoder

        for path in export_encoder(source, target, out):
            click.echo(str(path))

    run_user_command(debug, run)
