"""Multi-view contrastive loss of paper 000 (Eq. 2): frontal and lateral views of one study are positives.

``multiview_infonce`` declares paired positives and the cosine similarity; ``kmedssl.losses.contrastive``
computes it.
"""

import keras

from kmedssl.losses import contrastive
from kmedssl.losses.blocked import validate_block_size
from kmedssl.losses.common import validate_pair, validate_positive
from kmedssl.losses.replicas import validate_gather


def multiview_infonce(z_f, z_l, temperature=0.1, exclude_positive=True, block_size=None, gather="global"):
    """Multi-view InfoNCE over frontal/lateral pairs (paper 000, Eq. 2).

    With ``z = [n(z_f); n(z_l)]`` (2B anchors), anchor i in view v, and ``s(u, w) = u . w / T``:

        L = -1/(2B) sum_v sum_i log( exp(s(z_v^i, z_vbar^i)) /
                                     sum_{k != i} [exp(s(z_v^i, z_v^k)) + exp(s(z_v^i, z_vbar^k))] )

    By default (``exclude_positive=True``, exactly Eq. 2) the denominator has the 2B - 2 terms k != i, so
    the positive pair is not in it; this needs B >= 2. ``exclude_positive=False`` adds the positive to the
    denominator, which is standard NT-Xent as in the authors' released code (= ``nt_xent``).

    ``contrastive.contrastive_loss`` with ``PairedPositives(exclude_positive)`` and
    ``CosineSimilarity(temperature)``. Above 2B = ``blocked.AUTO_BLOCKED_ROWS`` rows (or with
    ``block_size >= 1``) the logits are computed in tiles (``kmedssl.losses.blocked``), memory
    O(block² + B·D); same value and gradients. There is no Triton kernel for it.

    Args:
        z_f, z_l: ``(B, D)`` frontal / lateral embeddings (CLS tokens), float32 or bfloat16, normalised inside.
        temperature: T > 0 (paper default 0.1; the authors' code uses 0.5).
        exclude_positive: see above.
        block_size: None (auto), 0 (always the plain matrices) or the rows of one tile of the row-blocked
            path.
        gather: ``"global"`` (negatives from every data-parallel replica) or ``"local"`` (from this
            replica's rows only); the same on one device (``kmedssl.losses.replicas``). The B >= 2 rule of
            ``exclude_positive`` applies to the rows each device contrasts on its own (``"local"``).

    Returns:
        float32 scalar.
    """
    validate_positive(temperature=temperature)
    validate_block_size(block_size)
    validate_pair(z_f, z_l, names=("z_f", "z_l"))
    return contrastive.contrastive_loss(
        (z_f, z_l), contrastive.PairedPositives(exclude_positive), contrastive.CosineSimilarity(temperature),
        block_size=block_size, gather=gather,
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
