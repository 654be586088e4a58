"""Full fine-tuning: every encoder layer trainable, plus a new linear head (paper 001 §4.2, Table 3).

Paper 001's downstream recipe (Table 3): 10 epochs, batch size 32, Adam with learning rate 1e-4 and
StepLR(step_size=5, gamma=0.1), i.e. the learning rate of epoch ``e`` is ``lr * gamma ** (e // step_size)``.
The loss is sigmoid binary cross-entropy per label (multi-label, as the supervised baseline) or softmax
cross-entropy (one class per image). The caller's encoder is never modified: a copy is fine-tuned.
"""

import math

import keras
import numpy as np
from keras import ops

from kmedssl.ops.runtime import seed_everything


@keras.saving.register_keras_serializable(package="kmedssl")
class FineTuneClassifier(keras.Model):
    """``logits = W · encoder.features(images) + b``: ``(B, H, W, C)`` images -> ``(B, num_classes)`` logits.

    The head computes in float32 whatever the encoder's dtype policy.

    Args:
        encoder: a backbone from ``kmedssl.backbones`` (it has ``features(images, training)`` and ``dim``).
        num_classes: outputs of the linear head (labels for multi-label, classes for softmax).
        seed: seed of the head's initialiser; None draws from the global seed.
    """

    def __init__(self, encoder, num_classes, seed=None, **kwargs):
        if not hasattr(encoder, "features") or not hasattr(encoder, "dim"):
            raise ValueError(
                f"Expected an encoder with `features(images, training)` and `dim` (a kmedssl backbone). "
                f"Received: {type(encoder).__name__}"
            )
        if num_classes < 1:
            raise ValueError(f"Expected num_classes >= 1. Received: num_classes={num_classes}")
        super().__init__(**kwargs)

        # === Config ===
        self.encoder = encoder
        self.num_classes = num_classes
        self.seed = seed

        # === Layers ===
        self.head = keras.layers.Dense(
            num_classes, kernel_initializer=keras.initializers.GlorotUniform(seed=seed), dtype="float32",
            name="head",
        )
        self.build(None)

    def build(self, input_shape):
        self.head.build((None, self.encoder.dim))

    def call(self, images, training=None):
        features = ops.cast(self.encoder.features(images, training=training), "float32")  # (B, dim)
        return self.head(features)  # (B, num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "num_classes": self.num_classes,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)


def step_lr_schedule(learning_rate, step_size, gamma, epochs, steps_per_epoch):
    """StepLR(step_size, gamma) as a per-step ``PiecewiseConstantDecay``.

    Optimizer step ``t`` (0-based; epoch ``e = t // steps_per_epoch``) gets
    ``learning_rate * gamma ** (e // step_size)``. ``PiecewiseConstantDecay`` gives ``values[i]`` while
    ``step <= boundaries[i]``, so the boundaries are the last steps of each ``step_size``-epoch block:
    ``k * step_size * steps_per_epoch - 1`` for ``k = 1 .. ceil(epochs / step_size)``.
    """
    if learning_rate <= 0 or step_size < 1 or not 0 < gamma <= 1 or epochs < 1 or steps_per_epoch < 1:
        raise ValueError(
            f"Expected learning_rate > 0, step_size >= 1, 0 < gamma <= 1, epochs >= 1 and steps_per_epoch >= 1. "
            f"Received: learning_rate={learning_rate}, step_size={step_size}, gamma={gamma}, epochs={epochs}, "
            f"steps_per_epoch={steps_per_epoch}"
        )
    blocks = math.ceil(epochs / step_size)
    boundaries = [k * step_size * steps_per_epoch - 1 for k in range(1, blocks + 1)]
    values = [float(learning_rate * gamma**k) for k in range(blocks + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def copy_encoder(encoder):
    """A trainable copy of ``encoder`` (same architecture and weights; the original is never touched)."""
    copy = type(encoder).from_config(encoder.get_config())
    copy.set_weights(encoder.get_weights())
    copy.trainable = True
    return copy


def _check_inputs(images, labels, multi_label):
    if images.ndim != 4:
        raise ValueError(f"Expected images of shape (N, H, W, C). Received: images.shape={images.shape}")
    if labels.ndim != 2 or len(labels) != len(images):
        raise ValueError(
            f"Expected labels of shape (N, K) with N = {len(images)} images. Received: labels.shape={labels.shape}"
        )
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("Expected 0/1 labels. Received: values outside {0, 1}")
    if not multi_label and not np.all(labels.sum(axis=1) == 1):
        raise ValueError("Expected one-hot label rows (exactly one 1 per row) with multi_label=False. "
                         f"Received: row sums {sorted(set(labels.sum(axis=1).tolist()))}")


def fit_finetune(encoder, images, labels, epochs=10, batch_size=32, learning_rate=1e-4, step_size=5, gamma=0.1,
                 seed=0, multi_label=True):
    """Fine-tune a copy of ``encoder`` with a new linear head on labelled images (paper 001 Table 3).

    Loss: ``-mean_{i,k} [y_ik log σ(z_ik) + (1 - y_ik) log(1 - σ(z_ik))]`` (multi-label) or
    ``-mean_i sum_k y_ik log softmax(z_i)_k`` (one-hot rows), ``z = FineTuneClassifier(images)``.
    Adam(``learning_rate``) with StepLR(``step_size``, ``gamma``); mini-batches reshuffled every epoch.
    Python, NumPy, Keras and the backend are seeded with ``seed``, so a run is reproducible.

    Args:
        encoder: a kmedssl backbone; it is copied, never modified.
        images: (N, H, W, C) float images. labels: (N, K) 0/1 (one-hot rows when ``multi_label=False``).
        epochs, batch_size, learning_rate, step_size, gamma: paper 001 Table 3 defaults.
        seed: seed of the head initialisation, the shuffling and any stochastic layer.
        multi_label: sigmoid BCE per label (True) or softmax cross-entropy (False).

    Returns:
        ``predict(images) -> (M, K)`` float32 probabilities (sigmoid or softmax of the logits).
    """
    images, labels = np.asarray(images, "float32"), np.asarray(labels, "float32")
    _check_inputs(images, labels, multi_label)
    if batch_size < 1:
        raise ValueError(f"Expected batch_size >= 1. Received: batch_size={batch_size}")
    schedule = step_lr_schedule(learning_rate, step_size, gamma, epochs, math.ceil(len(images) / batch_size))

    seed_everything(seed)
    model = FineTuneClassifier(copy_encoder(encoder), labels.shape[1], seed=seed)
    loss = (keras.losses.BinaryCrossentropy(from_logits=True) if multi_label
            else keras.losses.CategoricalCrossentropy(from_logits=True))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule), loss=loss)
    model.fit(images, labels, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)

    def predict(new_images):
        new_images = np.asarray(new_images, "float32")
        if new_images.ndim != 4:
            raise ValueError(f"Expected images of shape (M, H, W, C). Received: images.shape={new_images.shape}")
        logits = np.asarray(model.predict(new_images, batch_size=batch_size, verbose=0), "float64")  # (M, K)
        if multi_label:
            return (1.0 / (1.0 + np.exp(-logits))).astype("float32")
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (shifted / shifted.sum(axis=1, keepdims=True)).astype("float32")

    return predict
