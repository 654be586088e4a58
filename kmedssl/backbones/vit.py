"""Vision Transformer encoder that encodes any subset of patch tokens, given their indices (SPEC §1).

ViT (Dosovitskiy et al. 2021) with MAE's choices (He et al. 2022): linear patch embedding, fixed 2-D
sin-cos positions, a learnable CLS token, pre-norm blocks with stochastic depth, a final LayerNorm.
Masked pretraining (MVMAE, S-PCL) passes ``token_indices`` so that only the selected patches are embedded
and encoded; the positions travel with the patches, so no dense mask is ever built.
"""


import keras
import numpy as np
from keras import ops

from kmedssl.backbones.config_checks import constructor_arguments, integer_problems, transformer_problems
from kmedssl.backbones.layers import (
    TransformerBlock,
    patchify,
    sincos_position_embedding_2d,
    transformer_parameters,
    unpatchify,
)

VIT_SIZES = {
    "phantom": {"dim": 96, "depth": 4, "num_heads": 3},
    "tiny": {"dim": 192, "depth": 12, "num_heads": 3},
    "small": {"dim": 384, "depth": 12, "num_heads": 6},
    "base": {"dim": 768, "depth": 12, "num_heads": 12},
    "large": {"dim": 1024, "depth": 24, "num_heads": 16},
}


@keras.saving.register_keras_serializable(package="kmedssl")
class VisionTransformer(keras.Model):
    """ViT encoder: ``(B, H, W, C)`` images -> ``(B, 1 + n, dim)`` tokens, CLS first.

    ``x_i = LN_final(Blocks([cls; E p_i + pos_i for i in I]))`` where ``p_i`` is the ``i``-th row-major
    patch flattened as ``(p, p, C)``, ``E`` a Dense patch embedding (a stride-``p`` convolution written on
    patches), ``pos_i`` the fixed 2-D sin-cos position of patch ``i`` and ``I`` the selected patches
    (``token_indices``; all ``N`` patches in row-major order when None). The CLS token has no position.
    Block ``l`` of ``depth`` drops its branches with rate ``drop_path_rate * l / (depth - 1)``.

    Args:
        image_size: side of the square input images; divisible by ``patch_size``.
        patch_size: side of a square patch.
        channels: input channels (1 for radiographs).
        dim: token width; divisible by ``num_heads`` and by 4 (sin-cos positions).
        depth: number of transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width relative to ``dim``.
        drop_path_rate: stochastic-depth rate of the last block (linear rule from 0).
        layer_norm_epsilon: epsilon of every LayerNorm.
        input_mean, input_std: inputs are images in [0, 1]; patches are first normalised as
            ``(x - input_mean) / input_std`` (the normalisation step of paper 000 §2).
        seed: base seed of the drop-path generators (block ``l`` uses ``seed + l``); None draws from the
            global seed.
    """

    def __init__(
        self,
        image_size=224,
        patch_size=16,
        channels=1,
        dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        input_mean=0.5,
        input_std=0.25,
        seed=None,
        **kwargs,
    ):
        self.validate_config(dict(
            image_size=image_size, patch_size=patch_size, channels=channels, dim=dim, depth=depth,
            num_heads=num_heads, mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate,
            layer_norm_epsilon=layer_norm_epsilon, input_mean=input_mean, input_std=input_std, seed=seed,
        ))
        super().__init__(**kwargs)

        # === Config ===
        self.image_size = image_size
        self.patch_size = patch_size
        self.channels = channels
        self.dim = dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.input_mean = float(input_mean)
        self.input_std = float(input_std)
        self.seed = seed
        self.grid_size = image_size // patch_size
        self.num_patches = self.grid_size**2
        self.patch_dim = patch_size * patch_size * channels

        # === Layers ===
        policy = self.dtype_policy
        self.patch_embedding = keras.layers.Dense(dim, dtype=policy, name="patch_embedding")
        rates = np.linspace(0.0, drop_path_rate, depth)  # linear stochastic-depth rule
        self.blocks = [
            TransformerBlock(
                dim,
                num_heads,
                mlp_ratio=mlp_ratio,
                drop_path_rate=float(rate),
                layer_norm_epsilon=layer_norm_epsilon,
                seed=None if seed is None else seed + i,
                dtype=policy,
                name=f"block_{i}",
            )
            for i, rate in enumerate(rates)
        ]
        self.norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=policy, name="norm")
        self.build((None, image_size, image_size, channels))

    @classmethod
    def validate_config(cls, config):
        """Check a config (``get_config()``, e.g. read from a ``.keras`` file) without building anything.

        Raises:
            ValueError: one line naming the fields of the wrong type or out of range.
        """
        a = constructor_arguments(cls, config)
        integer_problems(a, positive=("image_size", "patch_size", "channels", "dim", "num_heads"),
                         non_negative=("depth",))
        if a["image_size"] % a["patch_size"]:
            raise ValueError(
                f"Expected image_size divisible by patch_size. Received: image_size={a['image_size']}, "
                f"patch_size={a['patch_size']}"
            )
        if a["dim"] % a["num_heads"] or a["dim"] % 4:
            raise ValueError(
                f"Expected dim divisible by num_heads and by 4. Received: dim={a['dim']}, num_heads={a['num_heads']}"
            )
        transformer_problems(a, width="dim")

    @classmethod
    def parameter_count(cls, config):
        """The number of weights of a model built from a valid ``config``, counted without building it."""
        a = constructor_arguments(cls, config)
        dim = a["dim"]
        embedding = (a["patch_size"] ** 2 * a["channels"] + 1) * dim
        cls_token, positions, norm = dim, (a["image_size"] // a["patch_size"]) ** 2 * dim, 2 * dim
        return embedding + cls_token + positions + norm + transformer_parameters(dim, a["depth"], a["mlp_ratio"])

    def build(self, input_shape):
        tokens_shape = (None, None, self.dim)
        self.patch_embedding.build((None, None, self.patch_dim))
        self.cls_token = self.add_weight(
            shape=(1, 1, self.dim), initializer=keras.initializers.RandomNormal(stddev=0.02), name="cls_token"
        )
        self.position_embedding = self.add_weight(
            shape=(self.num_patches, self.dim), initializer="zeros", trainable=False, name="position_embedding"
        )
        self.position_embedding.assign(sincos_position_embedding_2d(self.grid_size, self.dim))
        for block in self.blocks:
            block.build(tokens_shape)
        self.norm.build(tokens_shape)

    def call(self, images, token_indices=None, training=None):
        """Encode the selected patches of ``images``.

        Args:
            images: ``(B, image_size, image_size, channels)``.
            token_indices: ``(B, n)`` integer row-major patch indices in ``[0, num_patches)`` (each sample
                may select different patches, ``n`` shared by the batch), or None for all patches in order.
            training: enables drop path.

        Returns:
            ``(B, 1 + n, dim)`` tokens; ``[:, 0]`` is the CLS token, ``[:, 1 + j]`` encodes patch
            ``token_indices[:, j]``.
        """
        x = self._embed(images, token_indices)  # (B, 1 + n, dim)
        for block in self.blocks:
            x = block(x, training=training)
        return self.norm(x)

    def _embed(self, images, token_indices=None):
        """``[cls; E p_i + pos_i for i in I]``: ``(B, 1 + n, dim)`` tokens entering the first block."""
        patches = patchify(self._standardize_images(images), self.patch_size)  # (B, N, P)
        patches = (patches - self.input_mean) / self.input_std
        positions = ops.expand_dims(self.position_embedding, 0)  # (1, N, dim)
        if token_indices is not None:
            if len(token_indices.shape) != 2:
                raise ValueError(
                    f"Expected token_indices of shape (batch, n). Received: token_indices.shape="
                    f"{tuple(token_indices.shape)}"
                )
            token_indices = ops.cast(token_indices, "int32")
            patches = ops.take_along_axis(patches, ops.expand_dims(token_indices, -1), axis=1)  # (B, n, P)
            positions = ops.take(self.position_embedding, token_indices, axis=0)  # (B, n, dim)
        x = self.patch_embedding(patches) + ops.cast(positions, self.compute_dtype)  # (B, n, dim)
        cls = ops.broadcast_to(ops.cast(self.cls_token, x.dtype), (ops.shape(x)[0], 1, self.dim))
        return ops.concatenate([cls, x], axis=1)  # (B, 1 + n, dim)

    def block_outputs(self, images, block_indices, training=None):
        """Outputs of the blocks ``block_indices`` for all patches, for dense heads (UperNet's multi-level
        features, BEiT / MAE): the residual stream after block ``l`` (0-based), before the final LayerNorm.

        Args:
            images: ``(B, image_size, image_size, channels)``.
            block_indices: increasing block numbers in ``[0, depth)``.
            training: enables drop path.

        Returns:
            list of ``(B, 1 + num_patches, dim)`` tokens, CLS first, one per index; only the blocks up to the
            last index run.
        """
        block_indices = [int(i) for i in block_indices]
        if not block_indices or sorted(set(block_indices)) != block_indices or not 0 <= block_indices[0] \
                or block_indices[-1] >= self.depth:
            raise ValueError(f"Expected increasing block_indices in [0, {self.depth}). "
                             f"Received: block_indices={block_indices}")
        x, outputs = self._embed(images), []
        for index, block in enumerate(self.blocks[: block_indices[-1] + 1]):
            x = block(x, training=training)
            if index in block_indices:
                outputs.append(x)
        return outputs

    def features(self, images, training=False):
        """``(B, dim)`` CLS token of all patches (the embedding used by probes)."""
        return self(images, training=training)[:, 0]

    def patchify(self, images):
        """``(B, H, W, C) -> (B, num_patches, patch_size**2 * C)`` row-major patches flattened as (p, p, C)."""
        return patchify(self._standardize_images(images), self.patch_size)

    def unpatchify(self, patches):
        """``(B, num_patches, patch_size**2 * C) -> (B, image_size, image_size, C)``, inverse of ``patchify``."""
        if tuple(patches.shape[1:]) != (self.num_patches, self.patch_dim):
            raise ValueError(
                f"Expected patches of shape (batch, {self.num_patches}, {self.patch_dim}). "
                f"Received: patches.shape={tuple(patches.shape)}"
            )
        return unpatchify(patches, self.patch_size)

    def _standardize_images(self, images):
        """Validate ``(B, image_size, image_size, channels)``; give unknown static dims (graph mode) their size."""
        expected = (self.image_size, self.image_size, self.channels)
        shape = tuple(images.shape)
        if len(shape) != 4 or any(s is not None and s != e for s, e in zip(shape[1:], expected)):
            raise ValueError(
                f"Expected images of shape (batch, {expected[0]}, {expected[1]}, {expected[2]}). "
                f"Received: images.shape={shape}"
            )
        if None in shape[1:]:
            images = ops.reshape(images, (-1, *expected))
        return images

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "channels": self.channels,
            "dim": self.dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "drop_path_rate": self.drop_path_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "input_mean": self.input_mean,
            "input_std": self.input_std,
            "seed": self.seed,
        }


def vision_transformer(size="base", image_size=224, patch_size=16, channels=1, **overrides):
    """A :class:`VisionTransformer` of a named size.

    Sizes (dim / depth / heads): ``phantom`` 96/4/3 (CPU-minutes at 64 px), ``tiny`` 192/12/3,
    ``small`` 384/12/6, ``base`` 768/12/12, ``large`` 1024/24/16. ``overrides`` replace any argument.
    """
    if size not in VIT_SIZES:
        raise ValueError(f"Expected size in {sorted(VIT_SIZES)}. Received: size={size!r}")
    arguments = {**VIT_SIZES[size], "image_size": image_size, "patch_size": patch_size, "channels": channels}
    return VisionTransformer(**{**arguments, **overrides})
