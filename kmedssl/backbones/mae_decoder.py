"""Light MAE decoder: reconstructs every patch from the encoded visible tokens (He et al. 2022, §3).

Stages: embed the encoder tokens to the decoder width, append one shared mask token per removed patch,
unshuffle to row-major order with ``ids_restore``, add fixed 2-D sin-cos positions, run transformer
blocks, normalise, project to pixels, drop the CLS token.
"""

import math

import keras
from keras import ops

from kmedssl.backbones.config_checks import constructor_arguments, integer_problems, is_finite
from kmedssl.backbones.layers import TransformerBlock, sincos_position_embedding_2d, transformer_parameters

MAE_DECODER_SIZES = {
    "phantom": {"dim": 64, "depth": 2, "num_heads": 2},
    "base": {"dim": 512, "depth": 8, "num_heads": 16},
}


@keras.saving.register_keras_serializable(package="kmedssl")
class MAEDecoder(keras.Model):
    """MAE decoder: ``(B, 1 + n_keep, encoder_dim)`` tokens and ``(B, N)`` ``ids_restore`` -> ``(B, N, patch_dim)``.

    With ``ids_shuffle = argsort(noise)``, the encoder saw patches ``ids_shuffle[:, :n_keep]`` in that order
    and ``ids_restore = argsort(ids_shuffle)``. The decoder forms ``[x_kept; m, ..., m]`` (``N`` rows, ``m``
    the learnable mask token), reorders it with ``take_along_axis(., ids_restore)`` so row ``i`` is patch
    ``i``, adds the fixed sin-cos position of each patch (the CLS token has none), and returns
    ``Linear(LN(Blocks([cls; rows])))`` without the CLS row.

    Args:
        num_patches: ``N``, a perfect square (the encoder's patch grid).
        patch_dim: output width per patch (``patch_size**2 * channels`` for pixel targets).
        encoder_dim: width of the encoder tokens.
        dim: decoder width; divisible by ``num_heads`` and by 4.
        depth: number of transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width relative to ``dim``.
        layer_norm_epsilon: epsilon of every LayerNorm.
    """

    def __init__(
        self,
        num_patches,
        patch_dim,
        encoder_dim,
        dim=512,
        depth=8,
        num_heads=16,
        mlp_ratio=4.0,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        self.validate_config(dict(num_patches=num_patches, patch_dim=patch_dim, encoder_dim=encoder_dim, dim=dim,
                                  depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                                  layer_norm_epsilon=layer_norm_epsilon))
        super().__init__(**kwargs)

        # === Config ===
        self.num_patches = num_patches
        self.patch_dim = patch_dim
        self.encoder_dim = encoder_dim
        self.dim = dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.layer_norm_epsilon = layer_norm_epsilon
        self.grid_size = math.isqrt(num_patches)

        # === Layers ===
        policy = self.dtype_policy
        self.embedding = keras.layers.Dense(dim, dtype=policy, name="embedding")
        self.blocks = [
            TransformerBlock(
                dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                layer_norm_epsilon=layer_norm_epsilon,
                dtype=policy,
                name=f"block_{i}",
            )
            for i in range(depth)
        ]
        self.norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=policy, name="norm")
        self.prediction = keras.layers.Dense(patch_dim, dtype=policy, name="prediction")
        self.build((None, None, encoder_dim))

    @classmethod
    def validate_config(cls, config):
        """Check a config (``get_config()``, e.g. read from a ``.keras`` file) without building anything.

        Raises:
            ValueError: one line naming the fields of the wrong type or out of range.
        """
        a = constructor_arguments(cls, config)
        integer_problems(a, positive=("num_patches", "patch_dim", "encoder_dim", "dim", "num_heads"),
                         non_negative=("depth",))
        if math.isqrt(a["num_patches"]) ** 2 != a["num_patches"]:
            raise ValueError(f"Expected num_patches to be a perfect square. Received: num_patches={a['num_patches']}")
        if a["dim"] % a["num_heads"] or a["dim"] % 4:
            raise ValueError(
                f"Expected dim divisible by num_heads and by 4. Received: dim={a['dim']}, num_heads={a['num_heads']}"
            )
        valid = {
            "mlp_ratio": is_finite(a["mlp_ratio"]) and a["dim"] * a["mlp_ratio"] >= 1,
            "layer_norm_epsilon": is_finite(a["layer_norm_epsilon"]) and a["layer_norm_epsilon"] >= 0,
        }
        bad = [f"{key}={a[key]!r}" for key, ok in valid.items() if not ok]
        if bad:
            raise ValueError(f"Expected dim * mlp_ratio >= 1 and layer_norm_epsilon >= 0. Received: {', '.join(bad)}")

    @classmethod
    def parameter_count(cls, config):
        """The number of weights of a model built from a valid ``config``, counted without building it."""
        a = constructor_arguments(cls, config)
        dim = a["dim"]
        embedding, mask, positions, norm = (a["encoder_dim"] + 1) * dim, dim, a["num_patches"] * dim, 2 * dim
        prediction = (dim + 1) * a["patch_dim"]
        return embedding + mask + positions + norm + transformer_parameters(dim, a["depth"], a["mlp_ratio"]) + prediction

    def build(self, input_shape):
        tokens_shape = (None, None, self.dim)
        self.embedding.build((None, None, self.encoder_dim))
        self.mask_token = self.add_weight(
            shape=(1, 1, self.dim), initializer=keras.initializers.RandomNormal(stddev=0.02), name="mask_token"
        )
        self.position_embedding = self.add_weight(
            shape=(self.num_patches, self.dim), initializer="zeros", trainable=False, name="position_embedding"
        )
        self.position_embedding.assign(sincos_position_embedding_2d(self.grid_size, self.dim))
        for block in self.blocks:
            block.build(tokens_shape)
        self.norm.build(tokens_shape)
        self.prediction.build(tokens_shape)

    def call(self, tokens, ids_restore, training=None):
        """Predict all patches.

        Args:
            tokens: ``(B, 1 + n_keep, encoder_dim)`` encoder output, CLS first, kept patches in the order
                of ``ids_shuffle[:, :n_keep]``.
            ids_restore: ``(B, N)`` integer, ``argsort(ids_shuffle)``.

        Returns:
            ``(B, N, patch_dim)`` predictions in row-major patch order.
        """
        self._check_inputs(tokens, ids_restore)
        x = self.embedding(tokens)  # (B, 1 + n_keep, dim)
        batch, num_keep = ops.shape(x)[0], ops.shape(x)[1] - 1
        mask_tokens = ops.broadcast_to(
            ops.cast(self.mask_token, x.dtype), (batch, self.num_patches - num_keep, self.dim)
        )
        shuffled = ops.concatenate([x[:, 1:], mask_tokens], axis=1)  # (B, N, dim), ids_shuffle order
        restore = ops.expand_dims(ops.cast(ids_restore, "int32"), -1)  # (B, N, 1)
        patch_tokens = ops.take_along_axis(shuffled, restore, axis=1)  # (B, N, dim), row-major
        patch_tokens = patch_tokens + ops.cast(self.position_embedding, x.dtype)
        x = ops.concatenate([x[:, :1], patch_tokens], axis=1)  # (B, 1 + N, dim)
        for block in self.blocks:
            x = block(x, training=training)
        return self.prediction(self.norm(x))[:, 1:]  # (B, N, patch_dim)

    def _check_inputs(self, tokens, ids_restore):
        tokens_shape, ids_shape = tuple(tokens.shape), tuple(ids_restore.shape)
        if len(tokens_shape) != 3 or tokens_shape[-1] != self.encoder_dim:
            raise ValueError(
                f"Expected tokens of shape (batch, 1 + n_keep, {self.encoder_dim}). Received: "
                f"tokens.shape={tokens_shape}"
            )
        if len(ids_shape) != 2 or ids_shape[-1] not in (None, self.num_patches):
            raise ValueError(
                f"Expected ids_restore of shape (batch, {self.num_patches}). Received: ids_restore.shape={ids_shape}"
            )
        if tokens_shape[1] is not None and not 1 <= tokens_shape[1] <= self.num_patches + 1:
            raise ValueError(
                f"Expected 1 + n_keep tokens with 0 <= n_keep <= {self.num_patches}. Received: "
                f"tokens.shape={tokens_shape}"
            )

    def get_config(self):
        return {
            **super().get_config(),
            "num_patches": self.num_patches,
            "patch_dim": self.patch_dim,
            "encoder_dim": self.encoder_dim,
            "dim": self.dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }


def mae_decoder(size, num_patches, patch_dim, encoder_dim, **overrides):
    """An :class:`MAEDecoder` of a named size: ``phantom`` (dim 64, depth 2, heads 2) or ``base`` (512, 8, 16).

    For a :class:`VisionTransformer` ``encoder``:
    ``mae_decoder("base", encoder.num_patches, encoder.patch_dim, encoder.dim)``.
    """
    if size not in MAE_DECODER_SIZES:
        raise ValueError(f"Expected size in {sorted(MAE_DECODER_SIZES)}. Received: size={size!r}")
    arguments = {**MAE_DECODER_SIZES[size], **overrides}
    return MAEDecoder(num_patches, patch_dim, encoder_dim, **arguments)
