"""Multi-view contrastive loss of paper 000 (Eq. 2): frontal and lateral views of one study are positives."""

import keras
from keras import ops

from kmedssl.losses.blocked import blocked_or_naive, blocked_paired_infonce, validate_block_size
from kmedssl.losses.common import l2_normalize, paired_infonce, validate_pair, validate_positive
from kmedssl.losses.replicas import gathered_paired_infonce, grouped_mean, replica_path, validate_gather


def multiview_infonce(z_f, z_l, temperature=0.1, exclude_positive=True, block_size=None, gather="global"):
    """Multi-view InfoNCE over frontal/lateral pairs (paper 000, Eq. 2).

    With ``z = [n(z_f); n(z_l)]`` (2B anchors), anchor i in view v, and ``s(u, w) = u . w / T``:

        L = -1/(2B) sum_v sum_i log( exp(s(z_v^i, z_vbar^i)) /
                                     sum_{k != i} [exp(s(z_v^i, z_v^k)) + exp(s(z_v^i, z_vbar^k))] )

    By default (``exclude_positive=True``, exactly Eq. 2) the denominator has the 2B - 2 terms k != i, so
    the positive pair is not in it; this needs B >= 2. ``exclude_positive=False`` adds the positive to the
    denominator, which is standard NT-Xent as in the authors' released code (= ``nt_xent``). Above
    2B = ``blocked.AUTO_BLOCKED_ROWS`` rows (or with ``block_size >= 1``) the logits are computed in tiles
    (``kmedssl.losses.blocked``), memory O(block² + B·D); same value and gradients.

    Args:
        z_f, z_l: ``(B, D)`` frontal / lateral embeddings (CLS tokens), float32 or bfloat16, normalised inside.
        temperature: T > 0 (paper default 0.1; the authors' code uses 0.5).
        exclude_positive: see above.
        block_size: None (auto), 0 (always the plain matrices) or the rows of one tile of the row-blocked
            path.
        gather: ``"global"`` (negatives from every data-parallel replica) or ``"local"`` (from this
            replica's rows only); the same on one device (``kmedssl.losses.replicas``).

    Returns:
        float32 scalar.
    """
    validate_positive(temperature=temperature)
    validate_block_size(block_size)
    z_f, z_l = l2_normalize(z_f), l2_normalize(z_l)
    validate_pair(z_f, z_l, names=("z_f", "z_l"))
    path = replica_path(gather)
    if path == "gathered":
        return gathered_paired_infonce(
            ops.concatenate([z_f, z_l], axis=0), 1.0 / temperature, exclude_positive=exclude_positive,
            block_size=block_size,
        )
    if path == "grouped":
        return grouped_mean(
            lambda f, l: _plain_multiview_infonce(f, l, temperature, exclude_positive, block_size), z_f, z_l
        )
    return _plain_multiview_infonce(z_f, z_l, temperature, exclude_positive, block_size)


def _plain_multiview_infonce(z_f, z_l, temperature, exclude_positive, block_size):
    """``multiview_infonce`` of the rows given (unit rows): one device's batch, or one replica's rows."""
    if exclude_positive and z_f.shape[0] == 1:
        raise ValueError(
            "Expected a batch of at least 2 studies (per device with gather='local') when exclude_positive=True "
            f"(the denominator of Eq. 2 is otherwise empty). Received: z_f.shape={tuple(z_f.shape)}"
        )
    z = ops.concatenate([z_f, z_l], axis=0)  # (2B, D), view-major
    return blocked_or_naive(
        z,
        block_size,
        naive_fn=lambda: paired_infonce(ops.matmul(z, ops.transpose(z)) / temperature, exclude_positive),  # (2B, 2B)
        blocked_fn=lambda block: blocked_paired_infonce(
            z, 1.0 / temperature, exclude_positive=exclude_positive, block_size=block
        ),
    )


@keras.saving.register_keras_serializable(package="kmedssl")
class MultiviewInfoNCE(keras.losses.Loss):
    """``multiview_infonce`` as a Keras loss. ``y_pred``: ``(B, 2, D)``, frontal then lateral on axis 1;
    ``y_true`` is ignored (pass any tensor, e.g. zeros)."""

    def __init__(
        self, temperature=0.1, exclude_positive=True, block_size=None, gather="global", name="multiview_infonce",
        **kwargs
    ):
        super().__init__(name=name, **kwargs)
        validate_positive(temperature=temperature)
        validate_block_size(block_size)
        validate_gather(gather)
        self.temperature = temperature
        self.exclude_positive = exclude_positive
        self.block_size = block_size
        self.gather = gather

    def call(self, y_true, y_pred):
        return multiview_infonce(
            y_pred[:, 0],
            y_pred[:, 1],
            temperature=self.temperature,
            exclude_positive=self.exclude_positive,
            block_size=self.block_size,
            gather=self.gather,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "exclude_positive": self.exclude_positive,
            "block_size": self.block_size,
            "gather": self.gather,
        }
