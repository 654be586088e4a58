"""ModAn-MulSupCon: supervised contrastive pretraining on modality ⊕ anatomy metadata with
Jaccard-weighted positives (paper 001 §3, Eq. 3; SPEC §3.3)."""

import keras
from keras import ops

from kmedssl.losses.mulsupcon import jaccard_supcon
from kmedssl.methods.simclr import SimCLR


@keras.saving.register_keras_serializable(package="kmedssl")
class MulSupCon(SimCLR):
    """SimCLR's two crops, encoder and head, with the Jaccard-weighted multi-label SupCon loss.

    Args (besides SimCLR's):
        temperature: T of Eq. 3 (paper 001: 0.07).
        threshold: τ, minimum Jaccard overlap for a positive (paper 001: 0.3).
        base_temperature: T_base of Eq. 3.

    Input: ``{"image": (B, H, W, C), "metadata": (B, K)}`` with the modality ⊕ anatomy multi-hot.
    """

    loss_terms = ("supcon",)

    def __init__(self, encoder, temperature=0.07, threshold=0.3, base_temperature=0.07, **kwargs):
        super().__init__(encoder, temperature=temperature, **kwargs)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"Expected 0 <= threshold <= 1. Received: threshold={threshold}")
        self.threshold = float(threshold)
        self.base_temperature = float(base_temperature)

    def compute_loss_terms(self, x, y, y_pred, training):
        features = ops.stack([y_pred["z_1"], y_pred["z_2"]], axis=1)  # (B, 2, P)
        loss = jaccard_supcon(
            features, x["metadata"], self.temperature, self.threshold, self.base_temperature, gather=self.gather
        )
        return loss, {"supcon": loss}

    def get_config(self):
        config = super().get_config()
        config.update(threshold=self.threshold, base_temperature=self.base_temperature)
        return config
