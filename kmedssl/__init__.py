"""kmedssl: self-supervised pretraining of medical image encoders on Keras 3 (torch, tensorflow, jax).

Submodules are imported lazily so that ``kmedssl.cli`` can select the Keras backend before Keras is
imported (``import kmedssl`` alone never imports Keras).
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("backbones", "data", "eval", "losses", "methods", "ops", "recipes", "views")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'kmedssl' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_SUBMODULES])
