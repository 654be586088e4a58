"""Building blocks shared by the contrastive losses of ``kmedssl.losses``.

- ``l2_normalize``: ``n(x) = x / max(||x||, 1e-12)`` along the last axis (SPEC §3).
- ``logsumexp_excluding``: a row-wise log-sum-exp that leaves out masked entries.
- ``paired_infonce``: InfoNCE over the 2B rows of ``[z_a; z_b]`` given their ``(2B, 2B)`` logits; the
  positive of row i is row ``(i + B) mod 2B`` (``nt_xent``, ``multiview_infonce``, ``tsp_infonce``).
- ``validate_pair`` / ``validate_positive``: argument checks raising ValueError.
- ``tensor_arguments``: the tensors among some arguments (what ``kmedssl.ops.kernels.use_triton`` inspects).
"""

import numbers

from keras import ops

# Logit given to excluded pairs: finite (no inf - inf), and exp(_EXCLUDED - max) underflows to exactly 0.
_EXCLUDED = -1e9


def l2_normalize(x):
    """``n(x) = x / max(||x||_2, 1e-12)`` along the last axis, computed in float32.

    Written as ``x / sqrt(max(sum(x^2), 1e-24))`` so that a zero row gives zeros and a finite gradient.
    """
    x = ops.cast(x, "float32")
    squared_norm = ops.sum(ops.square(x), axis=-1, keepdims=True)
    return x / ops.sqrt(ops.maximum(squared_norm, 1e-24))


def logsumexp_excluding(logits, excluded):
    """``log sum_{j : not excluded[i, j]} exp(logits[i, j])`` for every row i of a ``(M, K)`` matrix.

    Numerically stable (``ops.logsumexp``); excluded entries get no gradient. At least one entry per row
    must be kept.
    """
    return ops.logsumexp(ops.where(excluded, _EXCLUDED, logits), axis=1)  # (M,)


def paired_infonce(logits, exclude_positive=False):
    """Mean InfoNCE over the 2B anchors of a paired batch, from its ``(2B, 2B)`` logit matrix.

    Row i's positive is column ``(i + B) mod 2B``; row i itself is never in the denominator.

        loss_i = -logits[i, pos(i)] + logsumexp_{j in den(i)} logits[i, j]

    with ``den(i) = {j != i}`` (2B - 1 terms, positive included: NT-Xent) or, when ``exclude_positive``,
    ``{j != i, j != pos(i)}`` (2B - 2 terms: paper 000, Eq. 2). Returns ``mean_i loss_i`` (float32 scalar).
    """
    logits = ops.cast(logits, "float32")  # (2B, 2B)
    num_rows = ops.shape(logits)[0]
    rows = ops.arange(num_rows)
    positives = (rows + num_rows // 2) % num_rows  # (2B,)
    is_self = rows[:, None] == rows[None, :]  # (2B, 2B)
    is_positive = positives[:, None] == rows[None, :]  # (2B, 2B)
    excluded = ops.logical_or(is_self, is_positive) if exclude_positive else is_self
    denominator = logsumexp_excluding(logits, excluded)  # (2B,)
    positive_logit = ops.sum(ops.where(is_positive, logits, 0.0), axis=1)  # (2B,)
    return ops.mean(denominator - positive_logit)


def validate_pair(z_a, z_b, names=("z_a", "z_b")):
    """Check that two embedding batches are ``(B, D)`` with the same static shape."""
    shape_a, shape_b = tuple(z_a.shape), tuple(z_b.shape)
    if len(shape_a) != 2 or shape_a != shape_b:
        raise ValueError(
            f"Expected {names[0]} and {names[1]} of the same shape (B, D). "
            f"Received: {names[0]}.shape={shape_a}, {names[1]}.shape={shape_b}"
        )


def validate_positive(**values):
    """Raise ValueError for a Python number that is not > 0 (tensors are passed through unchecked)."""
    for name, value in values.items():
        if isinstance(value, numbers.Real) and not value > 0:
            raise ValueError(f"Expected {name} > 0. Received: {name}={value}")


def tensor_arguments(*values):
    """The values that are not Python numbers, e.g. a ``scale`` that may be a float or a tensor."""
    return [value for value in values if not isinstance(value, numbers.Real)]
