"""Checks of backbone configs (``get_config()`` dicts, e.g. read from a ``.keras`` file) made before anything is
built, so a tampered or mistyped config is one line, not an allocation (docs/runs.md, "Safe loading")."""

import inspect
import math
import numbers


def is_integer(value, minimum=None):
    """Whether ``value`` is an integer (not a bool), and at least ``minimum`` when one is given."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and (minimum is None or value >= minimum)


def is_finite(value):
    """Whether ``value`` is a finite real number (not a bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def constructor_arguments(cls, config):
    """The ``__init__`` arguments of ``cls`` in ``config`` (a ``get_config()`` dict), defaults filled in and
    None for a missing required one; Keras's own keys (name, dtype, ...) are left out."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return {p.name: config.get(p.name, None if p.default is p.empty else p.default)
            for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD}


def integer_problems(arguments, positive=(), non_negative=()):
    """Raise one ``ValueError`` naming every argument of ``positive`` that is not an integer >= 1 and of
    ``non_negative`` that is not an integer >= 0."""
    bad = [f"{key}={arguments[key]!r}" for key in positive if not is_integer(arguments[key], 1)]
    bad += [f"{key}={arguments[key]!r}" for key in non_negative if not is_integer(arguments[key], 0)]
    if bad:
        expected = " and ".join(part for part in (f"{', '.join(positive)} >= 1" if positive else "",
                                                  f"{', '.join(non_negative)} >= 0" if non_negative else "") if part)
        raise ValueError(f"Expected integers {expected}. Received: {', '.join(bad)}")


def transformer_problems(arguments, width="dim"):
    """Raise one ``ValueError`` naming every transformer setting out of range: ``width * mlp_ratio >= 1``,
    ``0 <= drop_path_rate < 1``, ``layer_norm_epsilon >= 0``, a finite ``input_mean``, ``input_std > 0`` and an
    integer or None ``seed`` (``width`` names the token width: ``dim`` for a ViT, ``embed_dim`` for a Swin)."""
    a = arguments
    valid = {
        "mlp_ratio": is_finite(a["mlp_ratio"]) and a[width] * a["mlp_ratio"] >= 1,
        "drop_path_rate": is_finite(a["drop_path_rate"]) and 0 <= a["drop_path_rate"] < 1,
        "layer_norm_epsilon": is_finite(a["layer_norm_epsilon"]) and a["layer_norm_epsilon"] >= 0,
        "input_mean": is_finite(a["input_mean"]),
        "input_std": is_finite(a["input_std"]) and a["input_std"] > 0,
        "seed": a["seed"] is None or is_integer(a["seed"]),
    }
    bad = [f"{key}={a[key]!r}" for key, ok in valid.items() if not ok]
    if bad:
        raise ValueError(f"Expected {width} * mlp_ratio >= 1, 0 <= drop_path_rate < 1, layer_norm_epsilon >= 0, "
                         f"a finite input_mean, input_std > 0 and an integer or None seed. Received: "
                         f"{', '.join(bad)}")
