"""ResNet-18 encoder (He et al. 2016) with the 1-channel, 3x3 stride-1 stem of paper 001 (§3, MoDAN).

Four stages of two basic blocks, widths ``(1, 2, 4, 8) * width``, strides ``(1, 2, 2, 2)``, then global
average pooling to a ``(B, 8 * width)`` embedding. Layouts follow torchvision: strided convolutions pad
symmetrically (``ZeroPadding2D`` + valid convolution), BatchNorm momentum 0.9 (torch's 0.1) and epsilon
1e-5, He-normal (fan-out) convolution kernels. BatchNorm statistics cover the global batch under data
parallelism (``SyncBatchNormalization``).
"""

import keras
from keras import ops

from kmedssl.backbones.layers import SyncBatchNormalization
from kmedssl.backbones.config_checks import constructor_arguments, is_finite, is_integer

STEMS = ("cifar", "imagenet")


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


@keras.saving.register_keras_serializable(package="kmedssl")
class BasicBlock(keras.layers.Layer):
    """ResNet basic block: ``relu(BN(conv3x3(relu(BN(conv3x3_s(x))))) + shortcut(x))``.

    The shortcut is the identity, or ``BN(conv1x1_s(x))`` when ``projection`` is True (stride or width
    change). Input ``(B, H, W, C_in)``, output ``(B, ceil(H / s), ceil(W / s), filters)``.

    Args:
        filters: output channels.
        strides: stride ``s`` of the first convolution (1 or 2).
        projection: use a 1x1 convolution shortcut.
    """

    def __init__(self, filters, strides=1, projection=False, **kwargs):
        if strides not in (1, 2):
            raise ValueError(f"Expected strides in (1, 2). Received: strides={strides}")
        super().__init__(**kwargs)
        self.filters = filters
        self.strides = strides
        self.projection = projection
        policy = self.dtype_policy
        first = [_conv(filters, 3, strides, policy, "conv_1")]
        if strides != 1:
            first.insert(0, keras.layers.ZeroPadding2D(1, dtype=policy, name="pad_1"))
        self.residual = [
            *first,
            _batch_norm(policy, "bn_1"),
            keras.layers.ReLU(dtype=policy, name="relu_1"),
            _conv(filters, 3, 1, policy, "conv_2"),
            _batch_norm(policy, "bn_2"),
        ]
        self.shortcut = (
            [_conv(filters, 1, strides, policy, "shortcut_conv"), _batch_norm(policy, "shortcut_bn")]
            if projection
            else []
        )

    def build(self, input_shape):
        _build_chain(self.residual, input_shape)
        _build_chain(self.shortcut, input_shape)

    def call(self, x, training=None):
        residual, shortcut = x, x
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
class ResNet18(keras.Model):
    """ResNet-18 encoder: ``(B, H, W, channels)`` images -> ``(B, 8 * width)`` pooled features.

    Stems: ``"cifar"`` = conv3x3 stride 1 -> BN -> ReLU, no max-pool (paper 001's 1-channel stem);
    ``"imagenet"`` = conv7x7 stride 2 -> BN -> ReLU -> max-pool 3x3 stride 2. Then basic blocks [2, 2, 2, 2]
    and global average pooling.

    Args:
        channels: input channels (1 for grey-scale).
        stem: ``"cifar"`` or ``"imagenet"``.
        width: channels of the first stage (64 in ResNet-18); the embedding has ``8 * width``.
        input_mean, input_std: inputs are images in [0, 1]; the model first computes
            ``(x - input_mean) / input_std`` (the normalisation step of paper 000 §2).
    """

    def __init__(self, channels=1, stem="cifar", width=64, input_mean=0.5, input_std=0.25, **kwargs):
        self.validate_config(dict(channels=channels, stem=stem, width=width, input_mean=input_mean,
                                  input_std=input_std))
        super().__init__(**kwargs)

        # === Config ===
        self.channels = channels
        self.stem = stem
        self.width = width
        self.input_mean = float(input_mean)
        self.input_std = float(input_std)
        self.dim = 8 * width

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
        self.blocks = []
        in_filters = width
        for stage, multiplier in enumerate((1, 2, 4, 8)):
            filters = width * multiplier
            for index in range(2):
                strides = 2 if stage > 0 and index == 0 else 1
                self.blocks.append(
                    BasicBlock(
                        filters,
                        strides=strides,
                        projection=strides != 1 or in_filters != filters,
                        dtype=policy,
                        name=f"stage_{stage + 1}_block_{index + 1}",
                    )
                )
                in_filters = filters
        self.build((None, None, None, channels))

    @classmethod
    def validate_config(cls, config):
        """Check a config (``get_config()``, e.g. read from a ``.keras`` file) without building anything.

        Raises:
            ValueError: one line naming the fields of the wrong type or out of range.
        """
        a = constructor_arguments(cls, config)
        if a["stem"] not in STEMS:
            raise ValueError(f"Expected stem in {STEMS}. Received: stem={a['stem']!r}")
        valid = {
            "channels": is_integer(a["channels"], 1),
            "width": is_integer(a["width"], 1),
            "input_mean": is_finite(a["input_mean"]),
            "input_std": is_finite(a["input_std"]) and a["input_std"] > 0,
        }
        bad = [f"{key}={a[key]!r}" for key, ok in valid.items() if not ok]
        if bad:
            raise ValueError(f"Expected integers channels, width >= 1, a finite input_mean and input_std > 0. "
                             f"Received: {', '.join(bad)}")

    @classmethod
    def parameter_count(cls, config):
        """The number of weights of a model built from a valid ``config``, counted without building it: the stem
        convolution, then per stage of width ``f`` four 3x3 convolutions and a 1x1 projection where the
        stride or width changes; every BatchNorm holds 4 values per channel."""
        a = constructor_arguments(cls, config)
        width, kernel = a["width"], 3 if a["stem"] == "cifar" else 7
        total = kernel * kernel * a["channels"] * width + 4 * width
        in_filters = width
        for multiplier in (1, 2, 4, 8):
            filters = width * multiplier
            total += 9 * in_filters * filters + 3 * 9 * filters * filters + 4 * 4 * filters
            if in_filters != filters:
                total += in_filters * filters + 4 * filters
            in_filters = filters
        return total

    def build(self, input_shape):
        _build_chain(self.stem_layers + self.blocks, input_shape)

    def call(self, images, training=None):
        """``(B, H, W, channels)`` -> ``(B, 8 * width)`` globally average-pooled features."""
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
        """``(B, 8 * width)`` pooled features (same as calling the model, inference mode by default)."""
        return self(images, training=training)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "stem": self.stem, "width": self.width,
                "input_mean": self.input_mean, "input_std": self.input_std}
