"""ResNet encoders (He et al. 2016): ResNet-18 with the 1-channel, 3x3 stride-1 stem of paper 001 (§3, MoDAN), and
ResNet-50 (bottleneck blocks), whose published weights (torchvision, RadImageNet) ``kmedssl.interop`` reads.

Four stages of residual blocks with base widths ``(1, 2, 4, 8) * width`` and strides ``(1, 2, 2, 2)``, then global
average pooling to a ``(B, dim)`` embedding. ``block="basic"``: two 3x3 convolutions, ``dim = 8 * width``;
``block="bottleneck"``: 1x1 -> 3x3 -> 1x1 with 4x expansion, ``dim = 32 * width``, the stride on the 3x3
(torchvision's "v1.5", also MONAI's and transformers' default). Layouts follow torchvision: strided convolutions
pad symmetrically (``ZeroPadding2D`` + valid convolution), BatchNorm momentum 0.9 (torch's 0.1) and epsilon
1e-5, He-normal (fan-out) convolution kernels. BatchNorm statistics cover the global batch under data
parallelism (``SyncBatchNormalization``).
"""

import typing

import keras
from keras import ops

from kmedssl.backbones.config_checks import constructor_arguments, is_finite, is_integer
from kmedssl.backbones.layers import SyncBatchNormalization

STEMS = ("cifar", "imagenet")
BLOCKS = ("basic", "bottleneck")
EXPANSION = {"basic": 1, "bottleneck": 4}  # block output channels / base width
STAGE_WIDTHS = (1, 2, 4, 8)  # stage base widths in units of ``width``


def residual_convolutions(block, filters, strides):
    """``(kernel size, output channels, stride)`` of each convolution on a block's residual path, in order; each
    is followed by a BatchNorm, and by a ReLU except the last."""
    if block == "basic":
        return ((3, filters, strides), (3, filters, 1))
    return ((1, filters, 1), (3, filters, strides), (1, EXPANSION[block] * filters, 1))


def block_plan(block, depths, width):
    """``(name, input channels, base width, stride, projection)`` of every residual block, in order. Stage ``s``
    (1-based) has ``depths[s - 1]`` blocks of base width ``width * 2**(s - 1)``; the first block of stages 2-4
    strides 2; a block's shortcut is a 1x1 projection where the stride or the channel count changes."""
    plan, in_channels = [], width
    for stage, (multiplier, depth) in enumerate(zip(STAGE_WIDTHS, depths)):
        filters = width * multiplier
        for index in range(depth):
            strides = 2 if stage > 0 and index == 0 else 1
            out_channels = EXPANSION[block] * filters
            plan.append((f"stage_{stage + 1}_block_{index + 1}", in_channels, filters, strides,
                         strides != 1 or in_channels != out_channels))
            in_channels = out_channels
    return plan


def _block_parameters(block, in_channels, filters, strides, projection):
    """Weights of one block: its residual convolutions, the 1x1 projection if any, 4 per BatchNorm channel."""
    total, channels = 0, in_channels
    for kernel_size, out_channels, _ in residual_convolutions(block, filters, strides):
        total += kernel_size * kernel_size * channels * out_channels + 4 * out_channels
        channels = out_channels
    return total + (in_channels * channels + 4 * channels if projection else 0)


def _conv(filters, kernel_size, strides, policy, name):
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same" if strides == 1 else "valid",
        use_bias=False,
        kernel_initializer=keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal"),
        dtype=policy,
        name=name,
    )


def _batch_norm(policy, name):
    return SyncBatchNormalization(momentum=0.9, epsilon=1e-5, dtype=policy, name=name)


def _build_chain(layers, input_shape):
    """Build ``layers`` applied in sequence to ``input_shape``; return the output shape."""
    shape = input_shape
    for layer in layers:
        layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return shape


class _ResidualBlock(keras.layers.Layer):
    """``relu(residual(x) + shortcut(x))``: the residual path of ``residual_convolutions(block, ...)`` (each
    convolution then BN, ReLU between them; a strided convolution zero-pads symmetrically first), and the identity
    or ``BN(conv1x1_s(x))`` as shortcut. Subclasses name the ``block``."""

    block: typing.ClassVar[str] = ""

    def __init__(self, filters, strides=1, projection=False, **kwargs):
        if strides not in (1, 2):
            raise ValueError(f"Expected strides in (1, 2). Received: strides={strides}")
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        self.projection = projection
        policy = self.dtype_policy
        convolutions = residual_convolutions(self.block, filters, strides)
        self.residual = []
        for index, (kernel_size, out_channels, conv_strides) in enumerate(convolutions, 1):
            if conv_strides != 1:
                self.residual.append(keras.layers.ZeroPadding2D(kernel_size // 2, dtype=policy, name=f"pad_{index}"))
            self.residual += [_conv(out_channels, kernel_size, conv_strides, policy, f"conv_{index}"),
                              _batch_norm(policy, f"bn_{index}")]
            if index < len(convolutions):
                self.residual.append(keras.layers.ReLU(dtype=policy, name=f"relu_{index}"))
        out_channels = convolutions[-1][1]
        # A strided 1x1 projection is the 1x1 convolution of every other pixel: computed as such, because torch
        # 2.13's CPU backward of a 1x1 stride-2 convolution crashes the process on some channels-last shapes
        # (e.g. 8 -> 16 channels at 64 px: tests/backbones/test_resnet.py::test_strided_projection_trains).
        self.shortcut = (
            [_conv(out_channels, 1, 1, policy, "shortcut_conv"), _batch_norm(policy, "shortcut_bn")]
            if projection
            else []
        )

    def build(self, input_shape):
        _build_chain(self.residual, input_shape)
        _build_chain(self.shortcut, input_shape)

    def call(self, x, training=None):
        residual, shortcut = x, x
        if self.shortcut and self.strides == 2:
            shortcut = x[:, ::2, ::2, :]  # = a 1x1 convolution's stride 2 with "valid" padding
        for layer in self.residual:
            residual = layer(residual, training=training)
        for layer in self.shortcut:
            shortcut = layer(shortcut, training=training)
        return ops.relu(residual + shortcut)

    def compute_output_shape(self, input_shape):
        shape = input_shape
        for layer in self.residual:
            shape = layer.compute_output_shape(shape)
        return shape

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides, "projection": self.projection}


@keras.saving.register_keras_serializable(package="kmedssl")
class BasicBlock(_ResidualBlock):
    """ResNet basic block: ``relu(BN(conv3x3(relu(BN(conv3x3_s(x))))) + shortcut(x))``.

    The shortcut is the identity, or ``BN(conv1x1_s(x))`` when ``projection`` is True (stride or width
    change). Input ``(B, H, W, C_in)``, output ``(B, ceil(H / s), ceil(W / s), filters)``.

    Args:
        filters: output channels.
        strides: stride ``s`` of the first convolution (1 or 2).
        projection: use a 1x1 convolution shortcut.
    """

    block = "basic"


@keras.saving.register_keras_serializable(package="kmedssl")
class BottleneckBlock(_ResidualBlock):
    """ResNet bottleneck block (torchvision v1.5):
    ``relu(BN(conv1x1(relu(BN(conv3x3_s(relu(BN(conv1x1(x)))))))) + shortcut(x))``, 4x expansion.

    The shortcut is the identity, or ``BN(conv1x1_s(x))`` when ``projection`` is True (stride or width
    change). Input ``(B, H, W, C_in)``, output ``(B, ceil(H / s), ceil(W / s), 4 * filters)``.

    Args:
        filters: width of the 1x1 and 3x3 convolutions (torchvision's ``planes``); the block outputs
            ``4 * filters`` channels.
        strides: stride ``s`` of the 3x3 convolution (1 or 2).
        projection: use a 1x1 convolution shortcut.
    """

    block = "bottleneck"


BLOCK_LAYERS = {"basic": BasicBlock, "bottleneck": BottleneckBlock}


@keras.saving.register_keras_serializable(package="kmedssl")
class ResNet(keras.Model):
    """ResNet encoder: ``(B, H, W, channels)`` images -> ``(B, dim)`` pooled features.

    Stems: ``"cifar"`` = conv3x3 stride 1 -> BN -> ReLU, no max-pool (paper 001's 1-channel stem);
    ``"imagenet"`` = conv7x7 stride 2 -> BN -> ReLU -> max-pool 3x3 stride 2. Then four stages of ``depths``
    blocks (``BasicBlock`` or ``BottleneckBlock``) and global average pooling. ``ResNet18`` and ``ResNet50`` fix
    ``block`` and ``depths``.

    Args:
        channels: input channels (1 for grey-scale).
        stem: ``"cifar"`` or ``"imagenet"``.
        width: base width of the first stage (64 in ResNet-18/50); ``dim = 8 * width`` (basic) or
            ``32 * width`` (bottleneck).
        input_mean, input_std: inputs are images in [0, 1]; the model first computes
            ``(x - input_mean) / input_std`` (the normalisation step of paper 000 §2).
        block: ``"basic"`` or ``"bottleneck"``.
        depths: blocks per stage, four integers >= 1.
    """

    # Constructor arguments a named subclass fixes (and leaves out of its config).
    fixed_arguments: typing.ClassVar[dict] = {}

    def __init__(self, channels=1, stem="cifar", width=64, input_mean=0.5, input_std=0.25, block="basic",
                 depths=(2, 2, 2, 2), **kwargs):
        self.validate_config(dict(channels=channels, stem=stem, width=width, input_mean=input_mean,
                                  input_std=input_std, block=block, depths=depths))
        super().__init__(**kwargs)

        # === Config ===
        self.channels = channels
        self.stem = stem
        self.width = width
        self.input_mean = float(input_mean)
        self.input_std = float(input_std)
        self.block = block
        self.depths = tuple(depths)
        self.dim = STAGE_WIDTHS[-1] * EXPANSION[block] * width

        # === Layers ===
        policy = self.dtype_policy
        if stem == "cifar":
            self.stem_layers = [_conv(width, 3, 1, policy, "stem_conv")]
        else:
            self.stem_layers = [
                keras.layers.ZeroPadding2D(3, dtype=policy, name="stem_pad"),
                _conv(width, 7, 2, policy, "stem_conv"),
            ]
        self.stem_layers += [_batch_norm(policy, "stem_bn"), keras.layers.ReLU(dtype=policy, name="stem_relu")]
        if stem == "imagenet":
            self.stem_layers += [
                keras.layers.ZeroPadding2D(1, dtype=policy, name="pool_pad"),
                keras.layers.MaxPooling2D(3, strides=2, dtype=policy, name="pool"),
            ]
        self.blocks = [
            BLOCK_LAYERS[block](filters, strides=strides, projection=projection, dtype=policy, name=name)
            for name, _, filters, strides, projection in block_plan(block, self.depths, width)
        ]
        self.build((None, None, None, channels))

    @classmethod
    def validate_config(cls, config):
        """Check a config (``get_config()``, e.g. read from a ``.keras`` file) without building anything.

        Raises:
            ValueError: one line naming the fields of the wrong type or out of range.
        """
        a = {**constructor_arguments(cls, config), **cls.fixed_arguments}
        if a["stem"] not in STEMS:
            raise ValueError(f"Expected stem in {STEMS}. Received: stem={a['stem']!r}")
        if a["block"] not in BLOCKS:
            raise ValueError(f"Expected block in {BLOCKS}. Received: block={a['block']!r}")
        depths = a["depths"]
        valid = {
            "channels": is_integer(a["channels"], 1),
            "width": is_integer(a["width"], 1),
            "input_mean": is_finite(a["input_mean"]),
            "input_std": is_finite(a["input_std"]) and a["input_std"] > 0,
            "depths": isinstance(depths, (list, tuple)) and len(depths) == len(STAGE_WIDTHS)
            and all(is_integer(d, 1) for d in depths),
        }
        bad = [f"{key}={a[key]!r}" for key, ok in valid.items() if not ok]
        if bad:
            raise ValueError(f"Expected integers channels, width >= 1, a finite input_mean, input_std > 0 and depths "
                             f"of {len(STAGE_WIDTHS)} integers >= 1. Received: {', '.join(bad)}")

    @classmethod
    def parameter_count(cls, config):
        """The number of weights of a model built from a valid ``config``, counted without building it (in time
        independent of the depths, which a tampered file may make huge): the stem convolution, then per stage its
        first block (``block_plan``: it may stride and project) and ``depth - 1`` equal blocks; every BatchNorm
        holds 4 values per channel."""
        a = {**constructor_arguments(cls, config), **cls.fixed_arguments}
        width, kernel = a["width"], 3 if a["stem"] == "cifar" else 7
        total = kernel * kernel * a["channels"] * width + 4 * width
        plan = block_plan(a["block"], [1] * len(STAGE_WIDTHS), width)  # the first block of each stage
        for depth, (_, in_channels, filters, strides, projection) in zip(a["depths"], plan):
            out_channels = EXPANSION[a["block"]] * filters
            total += _block_parameters(a["block"], in_channels, filters, strides, projection)
            total += (depth - 1) * _block_parameters(a["block"], out_channels, filters, 1, False)
        return total

    def build(self, input_shape):
        _build_chain(self.stem_layers + self.blocks, input_shape)

    def call(self, images, training=None):
        """``(B, H, W, channels)`` -> ``(B, dim)`` globally average-pooled features."""
        shape = tuple(images.shape)
        if len(shape) != 4 or shape[-1] != self.channels:
            raise ValueError(
                f"Expected images of shape (batch, height, width, {self.channels}). Received: images.shape={shape}"
            )
        x = (ops.cast(images, self.compute_dtype) - self.input_mean) / self.input_std
        for layer in self.stem_layers + self.blocks:
            x = layer(x, training=training)
        return ops.mean(x, axis=(1, 2))

    def features(self, images, training=False):
        """``(B, dim)`` pooled features (same as calling the model, inference mode by default)."""
        return self(images, training=training)

    def get_config(self):
        config = {**super().get_config(), "channels": self.channels, "stem": self.stem, "width": self.width,
                  "input_mean": self.input_mean, "input_std": self.input_std, "block": self.block,
                  "depths": list(self.depths)}
        return {key: value for key, value in config.items() if key not in self.fixed_arguments}


@keras.saving.register_keras_serializable(package="kmedssl")
class ResNet18(ResNet):
    """ResNet-18: ``ResNet`` with basic blocks [2, 2, 2, 2]; ``dim = 8 * width`` (512 at width 64). The default
    stem is paper 001's 1-channel ``"cifar"`` stem; ``stem="imagenet"`` has torchvision's ``resnet18`` layout."""

    fixed_arguments = {"block": "basic", "depths": (2, 2, 2, 2)}

    def __init__(self, channels=1, stem="cifar", width=64, input_mean=0.5, input_std=0.25, **kwargs):
        super().__init__(channels, stem, width, input_mean, input_std, **self.fixed_arguments, **kwargs)


@keras.saving.register_keras_serializable(package="kmedssl")
class ResNet50(ResNet):
    """ResNet-50: ``ResNet`` with bottleneck blocks [3, 4, 6, 3]; ``dim = 32 * width`` (2048 at width 64).
    The default stem, ``"imagenet"``, has torchvision's ``resnet50`` layout (v1.5: the stride on the 3x3), which
    the published weights use (torchvision, MONAI, transformers, RadImageNet's PyTorch files; docs/interop.md).
    """

    fixed_arguments = {"block": "bottleneck", "depths": (3, 4, 6, 3)}

    def __init__(self, channels=1, stem="imagenet", width=64, input_mean=0.5, input_std=0.25, **kwargs):
        super().__init__(channels, stem, width, input_mean, input_std, **self.fixed_arguments, **kwargs)
