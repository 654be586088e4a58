"""Building blocks shared by the transformer backbones: patchify, fixed 2-D sin-cos positions, drop path,
multi-head self-attention and the pre-norm transformer block (ViT, Dosovitskiy et al. 2021; MAE, He et al.
2022).

``SyncBatchNormalization`` (the ResNet's) computes its training statistics over the global batch of every
data-parallel replica, as SimCLR's global BN.

Images are channels-last ``(B, H, W, C)``. Patches are numbered row-major (patch ``k`` sits at grid row
``k // g`` and column ``k % g``) and each patch is flattened as ``(p, p, C)`` (SPEC §3.1). ``merge_2x2`` and
``split_2x2`` rearrange such a row-major token grid between a g x g and a g/2 x g/2 or 2g x 2g grid (the ACE
composer and decomposer heads, SPEC §3.5).
"""

import math

import keras
import numpy as np
from keras import ops

from kmedssl.distributed import all_reduce_mean, replica_count, replica_uniform


# === Patches ===


def patchify(images, patch_size):
    """Cut images into non-overlapping square patches.

    Args:
        images: ``(B, H, W, C)`` with ``H`` and ``W`` divisible by ``patch_size``.
        patch_size: side ``p`` of a patch in pixels.

    Returns:
        ``(B, (H / p) * (W / p), p * p * C)``: row-major patches, each flattened as ``(p, p, C)``.
    """
    if len(images.shape) != 4:
        raise ValueError(f"Expected images of rank 4 (B, H, W, C). Received: images.shape={tuple(images.shape)}")
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    if height is None or width is None or channels is None:
        raise ValueError(
            f"Expected images with static height, width and channels. Received: images.shape={tuple(images.shape)}"
        )
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"Expected image height and width divisible by patch_size={patch_size}. "
            f"Received: images.shape={tuple(images.shape)}"
        )
    rows, cols = height // patch_size, width // patch_size
    x = ops.reshape(images, (-1, rows, patch_size, cols, patch_size, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # (B, rows, cols, p, p, C)
    return ops.reshape(x, (-1, rows * cols, patch_size * patch_size * channels))


def unpatchify(patches, patch_size):
    """Inverse of :func:`patchify` for a square grid.

    Args:
        patches: ``(B, N, p * p * C)`` row-major patches, ``N`` a perfect square.
        patch_size: side ``p`` of a patch in pixels.

    Returns:
        ``(B, g * p, g * p, C)`` images with ``g = sqrt(N)``.
    """
    if len(patches.shape) != 3 or patches.shape[1] is None or patches.shape[2] is None:
        raise ValueError(
            "Expected patches of static shape (B, N, patch_size**2 * C). "
            f"Received: patches.shape={tuple(patches.shape)}"
        )
    num_patches, patch_dim = patches.shape[1], patches.shape[2]
    grid_size = math.isqrt(num_patches)
    if grid_size * grid_size != num_patches or patch_dim % (patch_size * patch_size):
        raise ValueError(
            f"Expected a square number of patches of size patch_size**2 * C with patch_size={patch_size}. "
            f"Received: patches.shape={tuple(patches.shape)}"
        )
    channels = patch_dim // (patch_size * patch_size)
    x = ops.reshape(patches, (-1, grid_size, grid_size, patch_size, patch_size, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # (B, g, p, g, p, C)
    return ops.reshape(x, (-1, grid_size * patch_size, grid_size * patch_size, channels))


# === Token grids ===


def merge_2x2(tokens):
    """``(B, g^2, C) -> (B, g^2 / 4, 4C)``: each 2 x 2 block of a row-major g x g token grid concatenated
    channel-major, feature ``4c + 2 di + dj`` = token ``(2I + di, 2J + dj)``, channel ``c`` (as
    ``unfold(2, 2)``)."""
    grid, channels = _even_grid_side(tokens), tokens.shape[-1]
    x = ops.reshape(tokens, (-1, grid // 2, 2, grid // 2, 2, channels))  # (B, I, di, J, dj, C)
    x = ops.transpose(x, (0, 1, 3, 5, 2, 4))  # (B, I, J, C, di, dj)
    return ops.reshape(x, (-1, grid * grid // 4, 4 * channels))


def split_2x2(tokens):
    """``(B, g^2, 4C) -> (B, 4 g^2, C)``: depth-to-space onto the row-major 2g x 2g grid, the inverse of
    ``merge_2x2`` (feature ``4c + 2 di + dj`` of token ``(I, J)`` -> channel ``c`` of ``(2I + di, 2J + dj)``)."""
    grid, channels = _even_grid_side(tokens), tokens.shape[-1] // 4
    x = ops.reshape(tokens, (-1, grid, grid, channels, 2, 2))  # (B, I, J, C, di, dj)
    x = ops.transpose(x, (0, 1, 4, 2, 5, 3))  # (B, I, di, J, dj, C)
    return ops.reshape(x, (-1, 4 * grid * grid, channels))


def _even_grid_side(tokens):
    num_tokens = tokens.shape[1]
    grid = math.isqrt(num_tokens) if num_tokens else 0
    if grid * grid != num_tokens or grid % 2:
        raise ValueError(
            f"Expected tokens (B, g^2, C) of an even square grid g. Received: tokens.shape={tuple(tokens.shape)}"
        )
    return grid


# === Positions ===


def sincos_position_embedding_2d(grid_size, dim):
    """Fixed 2-D sine-cosine positional embedding of a ``grid_size x grid_size`` patch grid (MAE).

    With ``d = dim / 2`` and ``omega_k = 10000^(-k / (d / 2))`` for ``k = 0 .. d/2 - 1``, a coordinate ``t``
    is encoded as ``[sin(t * omega), cos(t * omega)]`` (``d`` values). The patch at row ``r`` and column
    ``c`` gets ``[enc(c), enc(r)]`` (MAE's layout: the first half encodes the column).

    Returns:
        ``(grid_size**2, dim)`` float32 NumPy array, rows in row-major patch order.
    """
    if dim % 4:
        raise ValueError(f"Expected dim divisible by 4 for 2-D sin-cos positions. Received: dim={dim}")
    quarter = dim // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)  # (dim/4,)
    rows, cols = np.divmod(np.arange(grid_size * grid_size, dtype=np.float64), grid_size)

    def encode(coords):  # (N,) -> (N, dim/2)
        angles = coords[:, None] * omega[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([encode(cols), encode(rows)], axis=1).astype(np.float32)


# === Layers ===


@keras.saving.register_keras_serializable(package="kmedssl")
class DropPath(keras.layers.Layer):
    """Stochastic depth: drop a whole residual branch per sample (Huang et al. 2016).

    In training, ``y = x * floor(keep + u) / keep`` with ``u ~ U[0, 1)`` drawn once per sample and
    ``keep = 1 - rate``; at inference ``y = x``.

    Args:
        rate: probability of dropping the branch, in ``[0, 1)``.
        seed: seed of the layer's ``keras.random.SeedGenerator`` (None: drawn from the global seed).
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Expected 0 <= rate < 1. Received: rate={rate}")
        super().__init__(**kwargs)
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if rate > 0.0 else None
        self.built = True

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)  # one draw per sample
        kept = ops.floor(keep + replica_uniform(shape, seed=self.seed_generator))  # 0 or 1
        return x * ops.cast(kept / keep, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="kmedssl")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Multi-head self-attention with a fused qkv projection.

    ``q, k, v = split(x W_qkv + b)``, per head ``softmax(q k^T / sqrt(dim / num_heads)) v``, heads
    concatenated, then ``W_o``. Input and output ``(B, T, dim)``.

    Args:
        dim: token width.
        num_heads: number of heads; must divide ``dim``.
    """

    def __init__(self, dim, num_heads, **kwargs):
        if dim % num_heads:
            raise ValueError(f"Expected dim divisible by num_heads. Received: dim={dim}, num_heads={num_heads}")
        super().__init__(**kwargs)
        self.dim = dim
        self.num_heads = num_heads
        self.qkv = keras.layers.Dense(3 * dim, dtype=self.dtype_policy, name="qkv")
        self.proj = keras.layers.Dense(dim, dtype=self.dtype_policy, name="proj")

    def build(self, input_shape):
        self.qkv.build(input_shape)
        self.proj.build(input_shape)

    def call(self, x):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        head_dim = self.dim // self.num_heads
        qkv = ops.reshape(self.qkv(x), (batch, length, 3, self.num_heads, head_dim))
        q, k, v = ops.unstack(qkv, 3, axis=2)  # each (B, T, H, dim / H)
        attended = ops.dot_product_attention(q, k, v)  # (B, T, H, dim / H)
        return self.proj(ops.reshape(attended, (batch, length, self.dim)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "num_heads": self.num_heads}


@keras.saving.register_keras_serializable(package="kmedssl")
class TransformerBlock(keras.layers.Layer):
    """Pre-norm transformer block (ViT): ``x + DP(MHSA(LN(x)))``, then ``x + DP(MLP(LN(x)))``.

    The MLP is ``Dense(mlp_ratio * dim, GELU) -> Dense(dim)``; DP is :class:`DropPath`. Input and output
    ``(B, T, dim)``.

    Args:
        dim: token width.
        num_heads: attention heads (divides ``dim``).
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        drop_path_rate: stochastic-depth rate of both residual branches.
        layer_norm_epsilon: epsilon of both LayerNorms.
        seed: seed of the drop-path generator.
    """

    def __init__(
        self, dim, num_heads, mlp_ratio=4.0, drop_path_rate=0.0, layer_norm_epsilon=1e-6, seed=None, **kwargs
    ):
        super().__init__(**kwargs)
        self.dim = dim
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.seed = seed
        hidden = int(dim * mlp_ratio)
        policy = self.dtype_policy
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy, name="attention_norm"
        )
        self.attention = MultiHeadSelfAttention(dim, num_heads, dtype=policy, name="attention")
        self.mlp_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=policy, name="mlp_norm")
        self.mlp_hidden = keras.layers.Dense(hidden, activation="gelu", dtype=policy, name="mlp_hidden")
        self.mlp_output = keras.layers.Dense(dim, dtype=policy, name="mlp_output")
        self.drop_path = DropPath(drop_path_rate, seed=seed, dtype=policy, name="drop_path")

    def build(self, input_shape):
        self.attention_norm.build(input_shape)
        self.attention.build(input_shape)
        self.mlp_norm.build(input_shape)
        self.mlp_hidden.build(input_shape)
        self.mlp_output.build(tuple(input_shape[:-1]) + (int(self.dim * self.mlp_ratio),))

    def call(self, x, training=None):
        x = x + self.drop_path(self.attention(self.attention_norm(x)), training=training)
        mlp = self.mlp_output(self.mlp_hidden(self.mlp_norm(x)))
        return x + self.drop_path(mlp, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "drop_path_rate": self.drop_path_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "seed": self.seed,
        }


def transformer_parameters(dim, depth, mlp_ratio):
    """Weights of ``depth`` ``TransformerBlock``s of width ``D``, MLP width ``H = int(mlp_ratio * D)``: per block
    two LayerNorms ``4 D``, qkv ``3 D^2 + 3 D``, projection ``D^2 + D``, MLP ``2 D H + H + D``."""
    hidden = int(dim * mlp_ratio)
    return depth * (4 * dim * dim + 2 * dim * hidden + 9 * dim + hidden)


# === Batch normalisation over the global batch ===


@keras.saving.register_keras_serializable(package="kmedssl")
class SyncBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose training statistics cover the global batch of every data-parallel
    replica (SimCLR's global BN, Chen et al. 2020 §2.2; torch's SyncBatchNorm), on every backend.

    With R replicas of equal local batches, each replica's channel moments ``m_r = mean(x)`` and
    ``q_r = mean(x^2)`` are averaged (``kmedssl.distributed.all_reduce_mean``, differentiable):

        mean = 1/R sum_r m_r,    var = 1/R sum_r q_r - mean^2

    which are the moments of the concatenated batch; gradients flow through the averages to every replica. On
    one replica (and in JAX's global program, whose batch is already global) this is the parent layer.
    """

    def _moments(self, inputs, mask):
        if mask is not None or replica_count() == 1:
            return super()._moments(inputs, mask)
        x = ops.cast(inputs, "float32")
        mean = all_reduce_mean(ops.mean(x, axis=self._reduction_axes))  # (C,)
        mean_square = all_reduce_mean(ops.mean(ops.square(x), axis=self._reduction_axes))  # (C,)
        variance = ops.maximum(mean_square - ops.square(mean), 0.0)
        return ops.cast(mean, inputs.dtype), ops.cast(variance, inputs.dtype)
