"""Swin Transformer encoder (Liu et al. 2021), written once in ``keras.ops``; Microsoft's / Hugging Face's layout.

Stages (``SwinTransformer.stage_outputs``):

1. Patch embedding: ``p x p`` patches (``layers.patchify``) -> Dense (a stride-``p`` convolution written on
   patches, as the ViT's) -> LayerNorm, on the ``R_0 x R_0`` grid, ``R_0 = image_size / p``.
2. Stage ``s`` of ``depths[s]`` :class:`SwinBlock` s of width ``C_s = embed_dim 2^s`` on the ``R_s x R_s`` grid,
   ``R_s = R_0 / 2^s``: pre-norm window multi-head self-attention with a relative position bias (W-MSA), the
   odd blocks on windows shifted by ``window / 2`` with the attention mask of the shifted image (SW-MSA), then
   a pre-norm MLP; both branches with stochastic depth. A stage whose grid is no larger than the window uses
   one window of the whole grid and no shift (Microsoft's and Hugging Face's rule).
3. :class:`PatchMerging` between stages: each 2 x 2 neighbourhood concatenated ``[x(0,0), x(1,0), x(0,1),
   x(1,1)]`` (Swin's channel order, so published weights load as they are; ``layers.merge_2x2`` orders the
   channels otherwise) -> LayerNorm -> Dense ``4C -> 2C`` without bias.
4. The final LayerNorm.

Swin has no CLS token: ``call`` returns ``(B, 1 + N, C)`` tokens whose token 0 is the mean of the ``N``
final-stage tokens (Hugging Face's ``pooler_output``) and whose tokens ``1..N`` are the final ``g x g`` grid in
row-major order (``last_hidden_state``), so code written for ``VisionTransformer`` (``[:, 0]`` features,
``[:, 1:]`` patch tokens, ``grid_size``, ``dim``) works with it.
"""

import keras
import numpy as np
from keras import ops

from kmedssl.backbones.config_checks import constructor_arguments, integer_problems, is_integer, transformer_problems
from kmedssl.backbones.layers import DropPath, MultiHeadSelfAttention, patchify, transformer_parameters
from kmedssl.backbones.vit import VisionTransformer

SWIN_SIZES = {
    # 64 px, patch 2: grids 32, 16, 8, 4, all multiples of the window 4 (the last one is a single window).
    "phantom": {"patch_size": 2, "embed_dim": 24, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 4, 8),
                "window_size": 4},
    "tiny": {"patch_size": 4, "embed_dim": 96, "depths": (2, 2, 6, 2), "num_heads": (3, 6, 12, 24),
             "window_size": 7},
    "small": {"patch_size": 4, "embed_dim": 96, "depths": (2, 2, 18, 2), "num_heads": (3, 6, 12, 24),
              "window_size": 7},
    "base": {"patch_size": 4, "embed_dim": 128, "depths": (2, 2, 18, 2), "num_heads": (4, 8, 16, 32),
             "window_size": 7},
}
# The attention logit of a pair of tokens from different regions of a shifted window (Microsoft / HF: -100).
MASKED_LOGIT = -100.0


# === Windows ===


def stage_plan(image_size, patch_size, embed_dim, depths, window_size):
    """``[(resolution, dim, window, shift)]`` of each stage: grid side ``R_s = image_size / (p 2^s)``, width
    ``embed_dim 2^s``, and the window and shift of its odd blocks: ``(R_s, 0)`` where ``R_s <= window_size``
    (one window, no shift), else ``(window_size, window_size // 2)``."""
    plan = []
    for s in range(len(depths)):
        resolution = image_size // patch_size // 2**s
        window = min(window_size, resolution)
        plan.append((resolution, embed_dim * 2**s, window, window // 2 if resolution > window_size else 0))
    return plan


def window_partition(x, window):
    """``(B, R, R, C) -> (B, (R/w)^2, w^2, C)``: non-overlapping ``w x w`` windows, row-major, each row-major."""
    side, channels = x.shape[1] // window, x.shape[-1]
    x = ops.reshape(x, (-1, side, window, side, window, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # (B, R/w, R/w, w, w, C)
    return ops.reshape(x, (-1, side * side, window * window, channels))


def window_reverse(windows, window, resolution):
    """Inverse of :func:`window_partition`: ``(B, (R/w)^2, w^2, C) -> (B, R, R, C)``."""
    side, channels = resolution // window, windows.shape[-1]
    x = ops.reshape(windows, (-1, side, side, window, window, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))  # (B, R/w, w, R/w, w, C)
    return ops.reshape(x, (-1, resolution, resolution, channels))


def relative_position_index(window):
    """``(w^2 * w^2,)`` int32: for query ``i`` and key ``j`` of a window (row-major), the row of the
    ``((2w - 1)^2, heads)`` bias table of their offset: ``(dy + w - 1) (2w - 1) + (dx + w - 1)``."""
    rows, cols = np.divmod(np.arange(window * window), window)
    dy = rows[:, None] - rows[None, :] + window - 1
    dx = cols[:, None] - cols[None, :] + window - 1
    return (dy * (2 * window - 1) + dx).reshape(-1).astype(np.int32)


def shifted_window_mask(resolution, window, shift):
    """``((R/w)^2, w^2, w^2)`` float32 additive mask of SW-MSA: 0 between tokens of the same region of the
    cyclically shifted image (regions split at ``R - w`` and ``R - shift`` along each axis), ``MASKED_LOGIT``
    between tokens of different regions."""
    bands = np.zeros(resolution, np.int64)
    bands[resolution - window:] = 1
    bands[resolution - shift:] = 2
    regions = 3 * bands[:, None] + bands[None, :]  # (R, R): region of each token
    side = resolution // window
    windows = regions.reshape(side, window, side, window).transpose(0, 2, 1, 3).reshape(side * side, -1)
    return np.where(windows[:, None, :] != windows[:, :, None], MASKED_LOGIT, 0.0).astype(np.float32)


# === Layers ===


@keras.saving.register_keras_serializable(package="kmedssl")
class WindowAttention(MultiHeadSelfAttention):
    """Multi-head self-attention inside each window, with a learned relative position bias (W-MSA).

    Per window and head: ``softmax(q k^T / sqrt(d) + B[index] + M) v`` where ``B`` is the ``((2w - 1)^2,
    heads)`` table ``relative_position_bias_table``, ``index`` the offset of each query-key pair
    (:func:`relative_position_index`) and ``M`` the optional shifted-window mask. The fused qkv and the output
    projection are :class:`MultiHeadSelfAttention`'s. The logits and softmax are float32.

    Input: ``(B, n_windows, w^2, dim)`` windows and ``window_mask`` ``(n_windows, w^2, w^2)`` or None; output the same
    shape as the windows.

    Args:
        dim: token width.
        num_heads: heads (divides ``dim``).
        window_size: side ``w`` of a window.
    """

    def __init__(self, dim, num_heads, window_size, **kwargs):
        super().__init__(dim, num_heads, **kwargs)
        self.window_size = window_size
        self.position_index = relative_position_index(window_size)

    def build(self, input_shape):
        super().build(input_shape)
        self.relative_position_bias_table = self.add_weight(
            shape=((2 * self.window_size - 1) ** 2, self.num_heads),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02), name="relative_position_bias_table",
        )

    def call(self, windows, window_mask=None):
        num_windows, tokens = windows.shape[1], self.window_size**2
        head_dim = self.dim // self.num_heads
        qkv = ops.reshape(self.qkv(windows), (-1, num_windows, tokens, 3, self.num_heads, head_dim))
        q, k, v = ops.unstack(qkv, 3, axis=3)  # each (B, nW, T, H, d)
        logits = ops.cast(ops.einsum("bwthd,bwshd->bwhts", q, k), "float32") / float(np.sqrt(head_dim))
        bias = ops.take(ops.cast(self.relative_position_bias_table, "float32"), self.position_index, axis=0)
        logits = logits + ops.transpose(ops.reshape(bias, (tokens, tokens, self.num_heads)), (2, 0, 1))  # (H, T, T)
        if window_mask is not None:
            logits = logits + ops.expand_dims(ops.cast(window_mask, "float32"), 1)  # (nW, 1, T, T)
        weights = ops.cast(ops.softmax(logits, axis=-1), v.dtype)  # (B, nW, H, T, T)
        attended = ops.einsum("bwhts,bwshd->bwthd", weights, v)
        return self.proj(ops.reshape(attended, (-1, num_windows, tokens, self.dim)))

    def get_config(self):
        return {**super().get_config(), "window_size": self.window_size}


@keras.saving.register_keras_serializable(package="kmedssl")
class SwinBlock(keras.layers.Layer):
    """Swin block on an ``R x R`` grid: ``x + DP(reverse(WA(partition(shift(LN(x))))))`` with the shift undone
    after the windows are merged back, then ``x + DP(MLP(LN(x)))``. Sub-layers are named as
    ``TransformerBlock``'s. Input and output ``(B, R, R, dim)``.

    Stochastic depth drops both branches (Microsoft's Swin; Hugging Face's drops only the attention branch,
    which is the same at inference).

    Args:
        dim: token width.
        num_heads: attention heads (divides ``dim``).
        resolution: grid side ``R`` (a multiple of ``window_size``).
        window_size: window side ``w``.
        shift_size: cyclic shift (0: W-MSA; ``w / 2`` on the odd blocks: SW-MSA with its mask).
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        drop_path_rate: stochastic-depth rate of both residual branches.
        layer_norm_epsilon: epsilon of both LayerNorms.
        seed: seed of the drop-path generator.
    """

    def __init__(self, dim, num_heads, resolution, window_size, shift_size=0, mlp_ratio=4.0, drop_path_rate=0.0,
                 layer_norm_epsilon=1e-5, seed=None, **kwargs):
        if resolution % window_size or not 0 <= shift_size < window_size:
            raise ValueError(f"Expected resolution divisible by window_size and 0 <= shift_size < window_size. "
                             f"Received: resolution={resolution}, window_size={window_size}, shift_size={shift_size}")
        super().__init__(**kwargs)
        self.dim = dim
        self.num_heads = num_heads
        self.resolution = resolution
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.seed = seed
        self.window_mask = shifted_window_mask(resolution, window_size, shift_size) if shift_size else None
        policy = self.dtype_policy
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=policy, name="attention_norm"
        )
        self.attention = WindowAttention(dim, num_heads, window_size, dtype=policy, name="attention")
        self.mlp_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=policy, name="mlp_norm")
        self.mlp_hidden = keras.layers.Dense(int(dim * mlp_ratio), activation="gelu", dtype=policy, name="mlp_hidden")
        self.mlp_output = keras.layers.Dense(dim, dtype=policy, name="mlp_output")
        self.drop_path = DropPath(drop_path_rate, seed=seed, dtype=policy, name="drop_path")

    def build(self, input_shape):
        self.attention_norm.build(input_shape)
        self.attention.build((None, None, self.window_size**2, self.dim))
        self.mlp_norm.build(input_shape)
        self.mlp_hidden.build(input_shape)
        self.mlp_output.build(tuple(input_shape[:-1]) + (int(self.dim * self.mlp_ratio),))

    def call(self, x, training=None):
        shift = self.shift_size
        y = self.attention_norm(x)
        if shift:
            y = ops.roll(y, shift=(-shift, -shift), axis=(1, 2))
        y = self.attention(window_partition(y, self.window_size), window_mask=self.window_mask)  # (B, nW, w^2, dim)
        y = window_reverse(y, self.window_size, self.resolution)
        if shift:
            y = ops.roll(y, shift=(shift, shift), axis=(1, 2))
        x = x + self.drop_path(y, training=training)
        mlp = self.mlp_output(self.mlp_hidden(self.mlp_norm(x)))
        return x + self.drop_path(mlp, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(), "dim": self.dim, "num_heads": self.num_heads, "resolution": self.resolution,
            "window_size": self.window_size, "shift_size": self.shift_size, "mlp_ratio": self.mlp_ratio,
            "drop_path_rate": self.drop_path_rate, "layer_norm_epsilon": self.layer_norm_epsilon, "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="kmedssl")
class PatchMerging(keras.layers.Layer):
    """``(B, R, R, C) -> (B, R/2, R/2, 2C)``: each 2 x 2 neighbourhood concatenated in Swin's order
    ``[x(2i, 2j), x(2i+1, 2j), x(2i, 2j+1), x(2i+1, 2j+1)]`` (feature ``(2 dj + di) C + c``), LayerNorm over
    the ``4C`` features, Dense ``4C -> 2C`` without bias.

    Args:
        dim: input channels ``C``.
        layer_norm_epsilon: epsilon of the LayerNorm.
    """

    def __init__(self, dim, layer_norm_epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.layer_norm_epsilon = layer_norm_epsilon
        self.norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="norm")
        self.reduction = keras.layers.Dense(2 * dim, use_bias=False, dtype=self.dtype_policy, name="reduction")

    def build(self, input_shape):
        self.norm.build((None, 4 * self.dim))
        self.reduction.build((None, 4 * self.dim))

    def call(self, x):
        half = x.shape[1] // 2
        x = ops.reshape(x, (-1, half, 2, half, 2, self.dim))  # (B, i, di, j, dj, C)
        x = ops.transpose(x, (0, 1, 3, 4, 2, 5))  # (B, i, j, dj, di, C)
        return self.reduction(self.norm(ops.reshape(x, (-1, half, half, 4 * self.dim))))

    def compute_output_shape(self, input_shape):
        side = None if input_shape[1] is None else input_shape[1] // 2
        return (input_shape[0], side, side, 2 * self.dim)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "layer_norm_epsilon": self.layer_norm_epsilon}


# === Model ===


@keras.saving.register_keras_serializable(package="kmedssl")
class SwinTransformer(keras.Model):
    """Swin encoder: ``(B, H, W, C)`` images -> ``(B, 1 + g^2, dim)`` tokens, their mean first (module docstring).

    Swin has no CLS token: token 0 is the mean of the ``g^2`` final-stage tokens after the final LayerNorm
    (Hugging Face's ``pooler_output``), tokens ``1..g^2`` the final ``g x g`` grid, row-major
    (``last_hidden_state``). It encodes whole images only (no ``token_indices``). Block ``l`` of the
    ``sum(depths)`` drops its branches with rate ``drop_path_rate * l / (sum(depths) - 1)``.

    Attributes besides the arguments: ``dim`` (final width ``embed_dim 2^(S-1)``), ``grid_size`` (final grid
    side ``g = image_size / (patch_size 2^(S-1))``), ``num_patches`` (``g^2``, the tokens after token 0),
    ``stage_dims`` and ``stage_resolutions``.

    Args:
        image_size: side of the square input images; divisible by ``patch_size 2^(S-1)`` for ``S`` stages.
        patch_size: side of a square patch.
        channels: input channels (1 for radiographs).
        embed_dim: width of the first stage (doubled by each patch merging).
        depths: blocks per stage.
        num_heads: attention heads per stage (each divides its stage's width).
        window_size: window side; every stage grid larger than it must be a multiple of it.
        mlp_ratio: MLP hidden width relative to the block width.
        drop_path_rate: stochastic-depth rate of the last block (linear rule from 0 over all blocks).
        layer_norm_epsilon: epsilon of every LayerNorm (Swin's 1e-5).
        input_mean, input_std: inputs are images in [0, 1]; patches are first normalised as
            ``(x - input_mean) / input_std``.
        seed: base seed of the drop-path generators (block ``l`` uses ``seed + l``); None draws from the
            global seed.
    """

    def __init__(
        self,
        image_size=224,
        patch_size=4,
        channels=1,
        embed_dim=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size=7,
        mlp_ratio=4.0,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-5,
        input_mean=0.5,
        input_std=0.25,
        seed=None,
        **kwargs,
    ):
        self.validate_config(dict(
            image_size=image_size, patch_size=patch_size, channels=channels, embed_dim=embed_dim, depths=depths,
            num_heads=num_heads, window_size=window_size, mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate,
            layer_norm_epsilon=layer_norm_epsilon, input_mean=input_mean, input_std=input_std, seed=seed,
        ))
        super().__init__(**kwargs)

        # === Config ===
        self.image_size = image_size
        self.patch_size = patch_size
        self.channels = channels
        self.embed_dim = embed_dim
        self.depths = tuple(int(d) for d in depths)
        self.num_heads = tuple(int(h) for h in num_heads)
        self.window_size = window_size
        self.mlp_ratio = mlp_ratio
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.input_mean = float(input_mean)
        self.input_std = float(input_std)
        self.seed = seed
        plan = stage_plan(image_size, patch_size, embed_dim, self.depths, window_size)
        self.stage_resolutions = [resolution for resolution, _, _, _ in plan]
        self.stage_dims = [dim for _, dim, _, _ in plan]
        self.dim = self.stage_dims[-1]
        self.grid_size = self.stage_resolutions[-1]
        self.num_patches = self.grid_size**2
        self.patch_dim = patch_size * patch_size * channels

        # === Layers ===
        policy = self.dtype_policy
        epsilon = layer_norm_epsilon
        self.patch_embedding = keras.layers.Dense(embed_dim, dtype=policy, name="patch_embedding")
        self.patch_norm = keras.layers.LayerNormalization(epsilon=epsilon, dtype=policy, name="patch_norm")
        rates = np.linspace(0.0, drop_path_rate, sum(self.depths))  # linear stochastic-depth rule
        self.blocks, self.merges = [], []
        for s, ((resolution, dim, window, shift), depth, heads) in enumerate(zip(plan, self.depths, self.num_heads)):
            for b in range(depth):
                index = len(self.blocks)
                self.blocks.append(SwinBlock(
                    dim, heads, resolution, window, shift_size=shift if b % 2 else 0, mlp_ratio=mlp_ratio,
                    drop_path_rate=float(rates[index]), layer_norm_epsilon=epsilon,
                    seed=None if seed is None else seed + index, dtype=policy, name=f"stage_{s}_block_{b}",
                ))
            if s + 1 < len(plan):
                self.merges.append(PatchMerging(dim, layer_norm_epsilon=epsilon, dtype=policy, name=f"merge_{s}"))
        self.norm = keras.layers.LayerNormalization(epsilon=epsilon, dtype=policy, name="norm")
        self.build((None, image_size, image_size, channels))

    @classmethod
    def validate_config(cls, config):
        """Check a config (``get_config()``, e.g. read from a ``.keras`` file) without building anything.

        Raises:
            ValueError: one line naming the fields of the wrong type or out of range.
        """
        a = constructor_arguments(cls, config)
        integer_problems(a, positive=("image_size", "patch_size", "channels", "embed_dim", "window_size"))
        depths, heads = a["depths"], a["num_heads"]
        if not (isinstance(depths, (list, tuple)) and isinstance(heads, (list, tuple)) and 1 <= len(depths) <= 8
                and len(heads) == len(depths) and all(is_integer(v, 1) for v in (*depths, *heads))):
            raise ValueError(f"Expected depths and num_heads: equally long lists of 1 to 8 integers >= 1. Received: "
                             f"depths={depths!r}, num_heads={heads!r}")
        stride = a["patch_size"] * 2 ** (len(depths) - 1)
        if a["image_size"] % stride:
            raise ValueError(f"Expected image_size divisible by patch_size * 2**(stages - 1) = {stride}. Received: "
                             f"image_size={a['image_size']}, patch_size={a['patch_size']}, depths={depths!r}")
        plan = stage_plan(a["image_size"], a["patch_size"], a["embed_dim"], depths, a["window_size"])
        bad = [f"stage {s}: resolution={r}, dim={d}, num_heads={h}"
               for s, ((r, d, w, _), h) in enumerate(zip(plan, heads)) if r % w or d % h]
        if bad:
            raise ValueError(f"Expected every stage's width divisible by its num_heads and its resolution (image_size "
                             f"/ (patch_size 2^s)) no larger than or a multiple of window_size={a['window_size']}. "
                             f"Received: {'; '.join(bad)}")
        transformer_problems(a, width="embed_dim")

    @classmethod
    def parameter_count(cls, config):
        """The number of weights of a model built from a valid ``config``, counted without building it: per stage
        its blocks (``transformer_parameters`` + the ``(2w - 1)^2 heads`` bias table each) and the merging after it
        (LayerNorm ``8C``, reduction ``8C^2``)."""
        a = constructor_arguments(cls, config)
        plan = stage_plan(a["image_size"], a["patch_size"], a["embed_dim"], a["depths"], a["window_size"])
        total = (a["patch_size"] ** 2 * a["channels"] + 1) * a["embed_dim"] + 2 * a["embed_dim"] + 2 * plan[-1][1]
        for s, ((_, dim, window, _), depth, heads) in enumerate(zip(plan, a["depths"], a["num_heads"])):
            total += transformer_parameters(dim, depth, a["mlp_ratio"]) + depth * (2 * window - 1) ** 2 * heads
            total += 8 * dim + 8 * dim * dim if s + 1 < len(plan) else 0
        return total

    def build(self, input_shape):
        self.patch_embedding.build((None, None, self.patch_dim))
        self.patch_norm.build((None, None, self.embed_dim))
        blocks = iter(self.blocks)
        for s, (resolution, dim) in enumerate(zip(self.stage_resolutions, self.stage_dims)):
            for _ in range(self.depths[s]):
                next(blocks).build((None, resolution, resolution, dim))
            if s < len(self.merges):
                self.merges[s].build((None, resolution, resolution, dim))
        self.norm.build((None, None, self.dim))

    def call(self, images, training=None):
        """Encode ``images``.

        Args:
            images: ``(B, image_size, image_size, channels)``.
            training: enables drop path.

        Returns:
            ``(B, 1 + grid_size**2, dim)`` tokens: ``[:, 0]`` the mean of the final tokens, ``[:, 1:]`` the final
            grid, row-major, after the final LayerNorm.
        """
        last = self.stage_outputs(images, training=training)[-1]  # (B, g, g, dim)
        tokens = ops.reshape(self.norm(last), (-1, self.num_patches, self.dim))
        return ops.concatenate([ops.mean(tokens, axis=1, keepdims=True), tokens], axis=1)

    def stage_outputs(self, images, training=None):
        """The output of every stage (before its patch merging and, for the last, before the final LayerNorm;
        Hugging Face's ``reshaped_hidden_states`` with ``output_hidden_states_before_downsampling``), for dense
        heads (UperNet).

        Returns:
            list of ``(B, R_s, R_s, C_s)`` maps, finest first: ``R_s = image_size / (patch_size 2^s)``,
            ``C_s = embed_dim 2^s``.
        """
        patches = patchify(self._standardize_images(images), self.patch_size)  # (B, R_0^2, p^2 C)
        patches = (patches - self.input_mean) / self.input_std
        x = self.patch_norm(self.patch_embedding(patches))
        x = ops.reshape(x, (-1, self.stage_resolutions[0], self.stage_resolutions[0], self.embed_dim))
        blocks, outputs = iter(self.blocks), []
        for s in range(len(self.depths)):
            for _ in range(self.depths[s]):
                x = next(blocks)(x, training=training)
            outputs.append(x)
            if s < len(self.merges):
                x = self.merges[s](x)
        return outputs

    def features(self, images, training=False):
        """``(B, dim)`` mean of the final tokens (the embedding used by probes)."""
        return self(images, training=training)[:, 0]

    # The ViT's check of ``(B, image_size, image_size, channels)`` inputs (static sizes restored in graph mode).
    _standardize_images = VisionTransformer._standardize_images

    def get_config(self):
        return {
            **super().get_config(),
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "channels": self.channels,
            "embed_dim": self.embed_dim,
            "depths": list(self.depths),
            "num_heads": list(self.num_heads),
            "window_size": self.window_size,
            "mlp_ratio": self.mlp_ratio,
            "drop_path_rate": self.drop_path_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "input_mean": self.input_mean,
            "input_std": self.input_std,
            "seed": self.seed,
        }


def swin_transformer(size="base", image_size=224, channels=1, **overrides):
    """A :class:`SwinTransformer` of a named size.

    Sizes (patch / embed_dim / depths / heads / window): ``phantom`` 2/24/(2,2,2,2)/(1,2,4,8)/4 (CPU-minutes at
    64 px: grids 32, 16, 8, 4), ``tiny`` (Swin-T) 4/96/(2,2,6,2)/(3,6,12,24)/7, ``small`` (Swin-S)
    4/96/(2,2,18,2)/(3,6,12,24)/7, ``base`` (Swin-B) 4/128/(2,2,18,2)/(4,8,16,32)/7. ``overrides`` replace any
    argument.
    """
    if size not in SWIN_SIZES:
        raise ValueError(f"Expected size in {sorted(SWIN_SIZES)}. Received: size={size!r}")
    return SwinTransformer(**{**SWIN_SIZES[size], "image_size": image_size, "channels": channels, **overrides})
