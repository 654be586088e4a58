"""Heads shared by the pretraining methods (SPEC §1 backbones/): layers a method puts on top of an encoder.

- ``ProjectionHead``: SimCLR's MLP projection (``simclr``, ``mulsupcon``; with batch normalisation, ``mvcon``).
- ``DINOHead``: DINO's MLP -> normalised prototypes (``ace`` global branch).
- ``Composer`` / ``Decomposer``: ACE's 2 x 2 token composition and decomposition (``ace`` local branch).

Every head is registered with Keras under ``kmedssl>ClassName`` (the name does not depend on the module), so
saved models that hold one keep loading.
"""

import keras
from keras import ops

from kmedssl.backbones.layers import SyncBatchNormalization, merge_2x2, split_2x2
from kmedssl.losses.common import l2_normalize


# === Projection heads ===


@keras.saving.register_keras_serializable(package="kmedssl")
class ProjectionHead(keras.layers.Layer):
    """MLP projection head: Linear(hidden_dim) -> ReLU -> Linear(output_dim) (SimCLR; SupCon's "mlp" head), or
    with ``batch_norm=True`` Linear(hidden_dim, no bias) -> BatchNorm -> ReLU -> Linear(output_dim) (SimCLR v2's
    form; ``SyncBatchNormalization``, so the statistics cover the global batch under data parallelism).

    Input: (B, D) encoder features. Output: (B, output_dim) un-normalised projections (losses normalise).
    """

    def __init__(self, hidden_dim=512, output_dim=128, batch_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim = int(hidden_dim)
        self.output_dim = int(output_dim)
        self.batch_norm = bool(batch_norm)
        self.hidden = keras.layers.Dense(self.hidden_dim, activation=None if batch_norm else "relu",
                                         use_bias=not batch_norm, name="hidden")
        self.norm = SyncBatchNormalization(name="norm") if batch_norm else None
        self.output_projection = keras.layers.Dense(self.output_dim, name="output")

    def build(self, input_shape):
        self.hidden.build(input_shape)
        if self.norm is not None:
            self.norm.build((*input_shape[:-1], self.hidden_dim))
        self.output_projection.build((*input_shape[:-1], self.hidden_dim))

    def call(self, features, training=None):
        hidden = self.hidden(features)
        if self.norm is not None:
            hidden = ops.relu(self.norm(hidden, training=training))
        return self.output_projection(hidden)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(hidden_dim=self.hidden_dim, output_dim=self.output_dim, batch_norm=self.batch_norm)
        return config


@keras.saving.register_keras_serializable(package="kmedssl")
class DINOHead(keras.layers.Layer):
    """DINO projection head (Caron et al. 2021): MLP -> L2 normalisation -> weight-normalised linear layer.

        h = Linear(bottleneck)(GELU(Linear(hidden)(GELU(Linear(hidden)(x)))))
        out = n(h) @ (V / ||V||_col)          (weight norm with the gain fixed at 1, DINO's norm_last_layer)

    with ``n`` = ``kmedssl.losses.common.l2_normalize`` (computed in float32, cast back to the layer's
    compute dtype).

    Input: ``(B, D)``. Output: ``(B, output_dim)`` logits (the loss applies temperatures and softmax).

    Args:
        output_dim: K, the number of prototypes.
        hidden_dim: width of the two hidden layers.
        bottleneck_dim: width before the normalised last layer.
    """

    def __init__(self, output_dim=65536, hidden_dim=2048, bottleneck_dim=256, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("output_dim", output_dim), ("hidden_dim", hidden_dim),
                            ("bottleneck_dim", bottleneck_dim)):
            if value < 1:
                raise ValueError(f"Expected {name} >= 1. Received: {name}={value}")
        self.output_dim = int(output_dim)
        self.hidden_dim = int(hidden_dim)
        self.bottleneck_dim = int(bottleneck_dim)
        dense = dict(kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02), dtype=self.dtype_policy)
        self.hidden_1 = keras.layers.Dense(self.hidden_dim, activation="gelu", name="hidden_1", **dense)
        self.hidden_2 = keras.layers.Dense(self.hidden_dim, activation="gelu", name="hidden_2", **dense)
        self.bottleneck = keras.layers.Dense(self.bottleneck_dim, name="bottleneck", **dense)

    def build(self, input_shape):
        self.hidden_1.build(input_shape)
        self.hidden_2.build((*input_shape[:-1], self.hidden_dim))
        self.bottleneck.build((*input_shape[:-1], self.hidden_dim))
        self.prototypes = self.add_weight(
            shape=(self.bottleneck_dim, self.output_dim),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="prototypes",
        )

    def call(self, features):
        h = self.bottleneck(self.hidden_2(self.hidden_1(features)))  # (B, bottleneck)
        h_unit = ops.cast(l2_normalize(h), h.dtype)  # (B, bottleneck)
        prototypes = ops.transpose(l2_normalize(ops.transpose(self.prototypes)))  # (bottleneck, K), unit columns
        return ops.matmul(h_unit, ops.cast(prototypes, h.dtype))  # (B, K)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(output_dim=self.output_dim, hidden_dim=self.hidden_dim, bottleneck_dim=self.bottleneck_dim)
        return config


# === ACE token heads ===


@keras.saving.register_keras_serializable(package="kmedssl")
class Composer(keras.layers.Layer):
    """ACE composer head (paper 004 Eq. 2, A.3): ``merge_2x2`` -> Linear(4C->C) -> LN -> ReLU -> Linear(C->C).

    Input: ``(B, g^2, C)`` student tokens. Output: ``(B, g^2 / 4, C)`` composed tokens (row-major g/2 grid).
    """

    def __init__(self, dim, layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.layer_norm_epsilon = layer_norm_epsilon
        policy = self.dtype_policy
        self.hidden = keras.layers.Dense(self.dim, dtype=policy, name="hidden")
        self.norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=policy, name="norm")
        self.output_projection = keras.layers.Dense(self.dim, dtype=policy, name="output")

    def build(self, input_shape):
        self.hidden.build((None, None, 4 * self.dim))
        self.norm.build((None, None, self.dim))
        self.output_projection.build((None, None, self.dim))

    def call(self, tokens):
        x = self.hidden(merge_2x2(tokens))  # (B, g^2/4, C)
        return self.output_projection(ops.relu(self.norm(x)))

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, layer_norm_epsilon=self.layer_norm_epsilon)
        return config


@keras.saving.register_keras_serializable(package="kmedssl")
class Decomposer(keras.layers.Layer):
    """ACE decomposer head (paper 004 Eq. 6, A.3): Linear(C->4C) -> LN -> ReLU -> Linear(4C->4C) ->
    ``split_2x2`` (depth-to-space).

    Input: ``(B, g^2, C)`` student tokens. Output: ``(B, 4 g^2, C)`` decomposed tokens (row-major 2g grid).
    """

    def __init__(self, dim, layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.layer_norm_epsilon = layer_norm_epsilon
        policy = self.dtype_policy
        self.hidden = keras.layers.Dense(4 * self.dim, dtype=policy, name="hidden")
        self.norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=policy, name="norm")
        self.output_projection = keras.layers.Dense(4 * self.dim, dtype=policy, name="output")

    def build(self, input_shape):
        self.hidden.build((None, None, self.dim))
        self.norm.build((None, None, 4 * self.dim))
        self.output_projection.build((None, None, 4 * self.dim))

    def call(self, tokens):
        x = self.hidden(tokens)  # (B, g^2, 4C)
        return split_2x2(self.output_projection(ops.relu(self.norm(x))))  # (B, 4g^2, C)

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, layer_norm_epsilon=self.layer_norm_epsilon)
        return config
