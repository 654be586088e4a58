"""SimCLR's NT-Xent loss (Chen et al. 2020), the baseline of paper 001 (T = 0.1).

``nt_xent`` declares paired positives and the cosine similarity; ``kmedssl.losses.contrastive`` computes it.
"""

import keras

from kmedssl.losses import contrastive
from kmedssl.losses.blocked import validate_block_size
from kmedssl.losses.common import validate_pair, validate_positive
from kmedssl.losses.replicas import validate_gather


def nt_xent(z_a, z_b, temperature=0.1, block_size=None, gather="global"):
    """NT-Xent loss of SimCLR (Chen et al. 2020, Eq. 1; paper 001's SimCLR baseline).

    Anchors are the 2B rows of ``z = [n(z_a); n(z_b)]``; row i's positive is row ``(i + B) mod 2B``:

        loss = mean_i -log( exp(z_i . z_pos(i) / T) / sum_{j != i} exp(z_i . z_j / T) )

    (the denominator has all 2B - 1 other rows, positive included). It equals
    ``multiview_infonce(z_a, z_b, temperature, exclude_positive=False)``: both are
    ``contrastive.contrastive_loss`` with ``PairedPositives(exclude_positive=False)`` and
    ``CosineSimilarity(temperature)``. Above 2B = ``blocked.AUTO_BLOCKED_ROWS`` rows (or with
    ``block_size >= 1``) the logits are computed in tiles (``kmedssl.losses.blocked``), memory
    O(block² + B·D); same value and gradients. There is no Triton kernel for it.

    Args:
        z_a, z_b: ``(B, D)`` embeddings of the two views (float32 or bfloat16), normalised inside.
        temperature: T > 0.
        block_size: None (auto), 0 (always the plain matrices) or the rows of one tile of the row-blocked
            path.
        gather: ``"global"`` (negatives from every data-parallel replica) or ``"local"`` (from this
            replica's rows only); the same on one device (``kmedssl.losses.replicas``).

    Returns:
        float32 scalar.
    """
    validate_positive(temperature=temperature)
    validate_block_size(block_size)
    validate_pair(z_a, z_b)
    return contrastive.contrastive_loss(
        (z_a, z_b), contrastive.PairedPositives(exclude_positive=False), contrastive.CosineSimilarity(temperature),
        block_size=block_size, gather=gather,
    )


@keras.saving.register_keras_serializable(package="kmedssl")
class NTXent(keras.losses.Loss):
    """``nt_xent`` as a Keras loss. ``y_pred``: ``(B, 2, D)``, the two views stacked on axis 1;
    ``y_true`` is ignored (pass any tensor, e.g. zeros)."""

    def __init__(self, temperature=0.1, block_size=None, gather="global", name="nt_xent", **kwargs):
        super().__init__(name=name, **kwargs)
        validate_positive(temperature=temperature)
        validate_block_size(block_size)
        validate_gather(gather)
        self.temperature = temperature
        self.block_size = block_size
        self.gather = gather

    def call(self, y_true, y_pred):
        return nt_xent(
            y_pred[:, 0], y_pred[:, 1], temperature=self.temperature, block_size=self.block_size, gather=self.gather
        )

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "block_size": self.block_size,
            "gather": self.gather,
        }
