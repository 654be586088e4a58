"""Supervised baseline (papers 000/001): encoder + linear classifier trained on labels."""

import keras
from keras import ops

from kmedssl.methods.base import PretrainingMethod


@keras.saving.register_keras_serializable(package="kmedssl")
class Supervised(PretrainingMethod):
    """Encoder features -> Dense(num_classes) logits; sigmoid BCE (multi-label) or softmax CE.

    Args:
        encoder: any kmedssl backbone (``features(images)`` -> (B, D)).
        num_classes: number of labels (multi-label) or classes (multi-class).
        multi_label: ``True``: labels (B, K) multi-hot, mean sigmoid binary cross-entropy;
            ``False``: labels (B,) integer classes, softmax cross-entropy.

    Input: ``x = {"image": (B, H, W, C)}``, ``y`` = labels.
    """

    loss_terms = ("classification",)
    self_supervised = False

    def __init__(self, encoder, num_classes, multi_label=True, **kwargs):
        super().__init__(encoder, **kwargs)
        if num_classes < 1:
            raise ValueError(f"Expected num_classes >= 1. Received: num_classes={num_classes}")
        self.num_classes = int(num_classes)
        self.multi_label = bool(multi_label)
        self.classifier = keras.layers.Dense(self.num_classes, name="classifier")

    def build(self, input_shape):
        self.classifier.build((None, self.encoder.dim))

    def call(self, inputs, training=False):
        return {"logits": self.classifier(self.encoder.features(inputs["image"], training=training))}

    def compute_loss_terms(self, x, y, y_pred, training):
        logits = ops.cast(y_pred["logits"], "float32")
        if self.multi_label:
            loss = ops.mean(ops.binary_crossentropy(ops.cast(y, "float32"), logits, from_logits=True))
        else:
            loss = ops.mean(ops.sparse_categorical_crossentropy(ops.cast(y, "int32"), logits, from_logits=True))
        return loss, {"classification": loss}

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, multi_label=self.multi_label)
        return config
