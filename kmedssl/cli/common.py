"""What every ``kmedssl`` sub-command shares: the backend choice (applied before Keras is imported) and user
mistakes reported as one line."""

import importlib
import importlib.util
import os
import sys

import click

BACKENDS = ("torch", "tensorflow", "jax")
# DataError and CheckpointError are ValueErrors, NonFiniteLossError is a FloatingPointError and OutOfMemoryError
# a MemoryError.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, FloatingPointError, OSError, MemoryError)
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


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


def split_names(text):
    """``"a, b,"`` -> ``("a", "b")``; None for an empty or missing option."""
    return tuple(v.strip() for v in text.split(",") if v.strip()) if text else None
