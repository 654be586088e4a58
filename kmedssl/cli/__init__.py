"""The ``kmedssl`` command (SPEC §7): the ``main`` group and its sub-commands, one module each.

``common`` holds what they share; no sub-command module imports another or this package's ``main``. Keras is
imported only inside a command, after ``--backend`` has been applied (``common.use_backend``).
"""

import click

from kmedssl.cli.bench import bench
from kmedssl.cli.common import CONTEXT_SETTINGS
from kmedssl.cli.data import data
from kmedssl.cli.evaluate import evaluate
from kmedssl.cli.export import export
from kmedssl.cli.info import info
from kmedssl.cli.pretrain import pretrain


@click.group(context_settings=CONTEXT_SETTINGS)
def main():
    """kmedssl: self-supervised pretraining of medical image encoders (Keras 3: torch, tensorflow, jax).

    \b
    Example:
      kmedssl pretrain spcl --data phantom --size phantom --output runs/spcl
      kmedssl evaluate runs/spcl --baseline random
    """


for command in (pretrain, evaluate, data, bench, info, export):
    main.add_command(command)
