"""UperNet-style decoder over four feature levels of an encoder (Xiao et al. 2018, UPerNet; the dense head of
ACE 004 §4 / §A.4 and of BEiT / MAE for a plain ViT).

Stages (``UperNet.call``):

1. ``encoder_feature_maps``: four feature maps, finest first. ResNet: the outputs of its four stages.
   ViT: the outputs of four blocks (``VisionTransformer.block_outputs``), CLS dropped, patch tokens reshaped
   to the ``(H / p, W / p, dim)`` grid. Swin: the outputs of its four stages (``SwinTransformer.stage_outputs``).
2. ``ViTFeaturePyramid`` (ViT only; BEiT's / MAE's neck): the four grids resampled by 4, 2, 1 and 1/2 (two
   2x2 stride-2 transposed convolutions with BN + GELU between them; one; identity; 2x2 max-pool), i.e. to
   strides ``p/4, p/2, p, 2p`` (4, 8, 16, 32 for ``p = 16``).
3. ``UperNetDecoder``: a pyramid pooling module (PPM, PSPNet) on the coarsest level (adaptive average pools
   to ``s x s`` for ``s`` in ``pool_scales``, 1x1 conv, bilinear back, concatenated with the level, 3x3 conv);
   FPN lateral 1x1 convs on the other levels and a top-down path ``L_i += up(L_{i+1})``; a 3x3 conv per
   level; every level upsampled to the finest and concatenated; a 3x3 fusion conv; a 1x1 classifier to
   ``num_classes`` logits. Every conv except the classifier is conv -> BatchNorm -> ReLU (mmseg's
   ``ConvModule``).
4. The logits are resized bilinearly (half-pixel centres, ``align_corners=False``) to the input size.

Everything is Keras layers and ``keras.ops``: the same on every backend.
"""

import keras
import numpy as np
from keras import ops

from kmedssl.backbones.resnet import ResNet
from kmedssl.backbones.swin import SwinTransformer
from kmedssl.backbones.vit import VisionTransformer

VIT_PYRAMID_SCALES = (4, 2, 1, 0.5)


# === Encoder features ===


def default_block_indices(depth):
    """Four ViT blocks spread over the depth, the last one included: ``round(depth k / 4) - 1`` for
    ``k = 1..4`` (``[2, 5, 8, 11]`` for 12 blocks, ``[0, 1, 2, 3]`` for 4; BEiT uses ``[3, 5, 7, 11]``)."""
    if depth < 4:
        raise ValueError(f"Expected a ViT of at least 4 blocks for four feature levels. Received: depth={depth}")
    return [int(round(depth * k / 4)) - 1 for k in (1, 2, 3, 4)]


def encoder_feature_maps(encoder, images, block_indices=None, training=None):
    """Four feature maps of ``images`` from a kmedssl encoder, finest first.

    Args:
        encoder: a ``VisionTransformer`` or a ``ResNet`` (``ResNet18``, ``ResNet50``).
        images: ``(B, H, W, C)``.
        block_indices: the ViT blocks (default :func:`default_block_indices`); must be None for a ResNet.
        training: passed to the encoder's layers (drop path, BatchNorm).

    Returns:
        list of four ``(B, h_i, w_i, c_i)`` maps. ViT: ``(B, H / p, W / p, dim)`` each. ResNet: its stage
        outputs, ``(B, H / s_i, W / s_i, dim 2^i / 8)`` (:func:`feature_channels`) with strides
        ``s = (1, 2, 4, 8)`` (``cifar`` stem) or ``(4, 8, 16, 32)`` (``imagenet`` stem).
    """
    if isinstance(encoder, VisionTransformer):
        indices = default_block_indices(encoder.depth) if block_indices is None else list(block_indices)
        if len(indices) != 4:
            raise ValueError(f"Expected 4 block_indices. Received: block_indices={indices}")
        grid = encoder.grid_size
        return [ops.reshape(tokens[:, 1:], (-1, grid, grid, encoder.dim))
                for tokens in encoder.block_outputs(images, indices, training=training)]
    if isinstance(encoder, ResNet):
        if block_indices is not None:
            raise ValueError(f"Expected block_indices=None for a ResNet. Received: block_indices={block_indices}")
        return _resnet_stage_outputs(encoder, images, training)
    if isinstance(encoder, SwinTransformer):
        return _swin_stage_outputs(encoder, images, block_indices, training)
    raise ValueError(f"Expected a VisionTransformer or a ResNet encoder. Received: {type(encoder).__name__}")


def feature_channels(encoder):
    """Channels of the four maps of :func:`encoder_feature_maps`: ``dim`` at every ViT level; a ResNet's
    stages ``dim / 8, dim / 4, dim / 2, dim`` (stage widths 1, 2, 4, 8 times its base width, times 4 for
    bottleneck blocks)."""
    if isinstance(encoder, VisionTransformer):
        return [encoder.dim] * 4
    if isinstance(encoder, ResNet):
        return [encoder.dim * m // 8 for m in (1, 2, 4, 8)]
    if isinstance(encoder, SwinTransformer):
        return list(encoder.stage_dims)
    raise ValueError(f"Expected a VisionTransformer or a ResNet encoder. Received: {type(encoder).__name__}")


def _resnet_stage_outputs(encoder, images, training):
    """The ResNet's own computation (``ResNet.call`` without the pooling), keeping each stage's last output.

    ``ResNet`` has no stage-output API: this walks its public ``stem_layers`` and ``blocks`` (named
    ``stage_<s>_block_<b>``) and repeats its input normalisation."""
    x = (ops.cast(images, encoder.compute_dtype) - encoder.input_mean) / encoder.input_std
    for layer in encoder.stem_layers:
        x = layer(x, training=training)
    outputs, stages = [], [block.name.split("_block_")[0] for block in encoder.blocks]
    for index, block in enumerate(encoder.blocks):
        x = block(x, training=training)
        if index + 1 == len(stages) or stages[index + 1] != stages[index]:
            outputs.append(x)
    if len(outputs) != 4:
        raise ValueError(f"Expected a ResNet of 4 stages. Received: {len(outputs)} stages")
    return outputs


# --- Swin ---


def _swin_stage_outputs(encoder, images, block_indices, training):
    """A Swin's four stage outputs (``SwinTransformer.stage_outputs``: ``(B, H / (p 2^s), W / (p 2^s), C 2^s)``,
    strides ``p, 2p, 4p, 8p``), which a UperNet takes as they are, like a ResNet's (no ViT neck)."""
    if block_indices is not None:
        raise ValueError(f"Expected block_indices=None for a SwinTransformer. Received: block_indices={block_indices}")
    if len(encoder.depths) != 4:
        raise ValueError(f"Expected a SwinTransformer of 4 stages. Received: depths={list(encoder.depths)}")
    return encoder.stage_outputs(images, training=training)


# === Layers ===


def _batch_norm(policy, name):
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, dtype=policy, name=name)


@keras.saving.register_keras_serializable(package="kmedssl")
class ConvBNReLU(keras.layers.Layer):
    """``relu(BN(conv_k(x)))``, 'same' padding, no conv bias. ``(B, H, W, C) -> (B, H, W, filters)``.

    Args:
        filters: output channels.
        kernel_size: 1 or 3.
    """

    def __init__(self, filters, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.conv = keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=False,
                                        dtype=self.dtype_policy, name="conv")
        self.norm = _batch_norm(self.dtype_policy, "bn")

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.norm.build(tuple(input_shape[:-1]) + (self.filters,))

    def call(self, x, training=None):
        return ops.relu(self.norm(self.conv(x), training=training))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size}


def adaptive_pool_matrix(in_size, out_size):
    """``(out_size, in_size)`` averaging matrix of torch's ``adaptive_avg_pool``: row ``i`` averages inputs
    ``floor(i n / m) .. ceil((i + 1) n / m) - 1`` (bins overlap or repeat when ``m`` does not divide ``n`` or
    ``m > n``)."""
    matrix = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        start, stop = (i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)
        matrix[i, start:stop] = 1.0 / (stop - start)
    return matrix


def _static_size(x):
    size = tuple(x.shape[1:3])
    if None in size:
        raise ValueError(f"Expected feature maps of static height and width. Received: shape {tuple(x.shape)}")
    return size


def _resize(x, size):
    """Bilinear resize of ``(B, h, w, C)`` to ``size = (H, W)``, half-pixel centres; identity when equal."""
    if tuple(x.shape[1:3]) == tuple(size):
        return x
    return ops.image.resize(x, size, interpolation="bilinear")


@keras.saving.register_keras_serializable(package="kmedssl")
class UperNetDecoder(keras.layers.Layer):
    """PPM + FPN + fusion decoder: four maps ``[(B, h_i, w_i, c_i)]`` (finest first, each coarser or equal)
    -> ``(B, h_0, w_0, num_classes)`` logits at the finest level (module docstring, stage 3).

    Args:
        num_classes: output channels (logits).
        channels: width of every decoder conv (512 in UperNet; 32-64 at phantom size).
        pool_scales: output sides of the PPM's adaptive average pools.
        dropout: dropout rate before the classifier (mmseg: 0.1).
    """

    def __init__(self, num_classes, channels=64, pool_scales=(1, 2, 3, 6), dropout=0.0, **kwargs):
        if int(num_classes) < 1 or int(channels) < 1 or not pool_scales or min(pool_scales) < 1:
            raise ValueError(f"Expected num_classes >= 1, channels >= 1 and positive pool_scales. Received: "
                             f"num_classes={num_classes}, channels={channels}, pool_scales={pool_scales}")
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.channels = int(channels)
        self.pool_scales = tuple(int(s) for s in pool_scales)
        self.dropout = float(dropout)
        policy = self.dtype_policy
        self.ppm_convs = [ConvBNReLU(channels, 1, dtype=policy, name=f"ppm_{s}") for s in self.pool_scales]
        self.ppm_bottleneck = ConvBNReLU(channels, 3, dtype=policy, name="ppm_bottleneck")
        self.lateral_convs = [ConvBNReLU(channels, 1, dtype=policy, name=f"lateral_{i}") for i in range(3)]
        self.fpn_convs = [ConvBNReLU(channels, 3, dtype=policy, name=f"fpn_{i}") for i in range(3)]
        self.fuse = ConvBNReLU(channels, 3, dtype=policy, name="fuse")
        self.drop = keras.layers.Dropout(self.dropout, dtype=policy, name="dropout")
        self.classifier = keras.layers.Conv2D(num_classes, 1, dtype=policy, name="classifier")

    def build(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        if len(shapes) != 4 or any(len(s) != 4 or s[-1] is None for s in shapes):
            raise ValueError(f"Expected four feature maps (B, h, w, c) of static c. Received: {shapes}")
        coarse = shapes[-1]
        for conv in self.ppm_convs:
            conv.build(coarse[:-1] + (coarse[-1],))
        self.ppm_bottleneck.build(coarse[:-1] + (coarse[-1] + len(self.pool_scales) * self.channels,))
        for conv, shape in zip(self.lateral_convs, shapes[:3]):
            conv.build(shape)
        for conv, shape in zip(self.fpn_convs, shapes[:3]):
            conv.build(shape[:-1] + (self.channels,))
        fused = shapes[0][:-1] + (4 * self.channels,)
        self.fuse.build(fused)
        self.classifier.build(shapes[0][:-1] + (self.channels,))

    def pyramid_pooling(self, x, training=None):
        """PPM on the coarsest map ``(B, h, w, c) -> (B, h, w, channels)`` (``h``, ``w`` static)."""
        size, branches = _static_size(x), [x]
        for conv, scale in zip(self.ppm_convs, self.pool_scales):
            rows = ops.cast(adaptive_pool_matrix(size[0], scale), x.dtype)  # (s, h)
            cols = ops.cast(adaptive_pool_matrix(size[1], scale), x.dtype)  # (s, w)
            pooled = ops.einsum("ih,bhwc,jw->bijc", rows, x, cols)  # adaptive average pool to (s, s)
            branches.append(_resize(conv(pooled, training=training), size))
        return self.ppm_bottleneck(ops.concatenate(branches, axis=-1), training=training)

    def call(self, features, training=None):
        features = list(features)
        laterals = [conv(f, training=training) for conv, f in zip(self.lateral_convs, features[:3])]
        laterals.append(self.pyramid_pooling(features[3], training=training))
        for i in range(3, 0, -1):  # top-down
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], _static_size(laterals[i - 1]))
        outputs = [conv(x, training=training) for conv, x in zip(self.fpn_convs, laterals[:3])] + [laterals[3]]
        finest = _static_size(outputs[0])
        fused = ops.concatenate([_resize(x, finest) for x in outputs], axis=-1)  # (B, h0, w0, 4 ch)
        fused = self.drop(self.fuse(fused, training=training), training=training)
        return self.classifier(fused)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.num_classes,)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "channels": self.channels,
                "pool_scales": self.pool_scales, "dropout": self.dropout}


@keras.saving.register_keras_serializable(package="kmedssl")
class ViTFeaturePyramid(keras.layers.Layer):
    """A plain ViT's four ``(B, g, g, dim)`` grids -> maps at 4x, 2x, 1x and 1/2x the grid's resolution
    (BEiT / MAE segmentation neck): ``ConvT2 -> BN -> GELU -> ConvT2``, ``ConvT2``, identity, ``MaxPool2``,
    where ``ConvT2`` is a 2x2 stride-2 transposed convolution keeping ``dim`` channels.

    Args:
        dim: the ViT's token width.
    """

    def __init__(self, dim, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        policy = self.dtype_policy

        def up(name):
            return keras.layers.Conv2DTranspose(dim, 2, strides=2, dtype=policy, name=name)

        self.up_4 = [up("up_4_a"), _batch_norm(policy, "up_4_bn"), up("up_4_b")]
        self.up_2 = up("up_2")
        self.down_2 = keras.layers.MaxPooling2D(2, dtype=policy, name="down_2")

    def build(self, input_shape):
        shape = tuple(input_shape[0])
        doubled = (shape[0], None if shape[1] is None else 2 * shape[1], None if shape[2] is None else 2 * shape[2],
                   self.dim)
        self.up_4[0].build(shape)
        self.up_4[1].build(doubled)
        self.up_4[2].build(doubled)
        self.up_2.build(shape)

    def call(self, grids, training=None):
        a, b, c, d = grids
        a = self.up_4[2](ops.gelu(self.up_4[1](self.up_4[0](a), training=training), approximate=False))
        return [a, self.up_2(b), c, self.down_2(d)]

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}


# === Model ===


@keras.saving.register_keras_serializable(package="kmedssl")
class UperNet(keras.Model):
    """Encoder + UperNet decoder: ``(B, H, W, C)`` images -> ``(B, H, W, num_classes)`` float32 logits.

    Args:
        encoder: a ``VisionTransformer`` or a ``ResNet`` (trained with the decoder unless frozen by the caller).
        num_classes: output channels (one per structure for sigmoid masks, or per landmark heatmap).
        channels: decoder width.
        pool_scales: the PPM's pool sides.
        block_indices: the ViT's four blocks (default ``default_block_indices``).
        dropout: dropout rate before the classifier.
    """

    def __init__(self, encoder, num_classes, channels=64, pool_scales=(1, 2, 3, 6), block_indices=None,
                 dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.num_classes = int(num_classes)
        self.channels = int(channels)
        self.pool_scales = tuple(pool_scales)
        self.is_vit = isinstance(encoder, VisionTransformer)
        if self.is_vit:
            block_indices = default_block_indices(encoder.depth) if block_indices is None else block_indices
        self.block_indices = None if block_indices is None else [int(i) for i in block_indices]
        self.dropout = float(dropout)
        policy = self.dtype_policy
        self.neck = ViTFeaturePyramid(encoder.dim, dtype=policy, name="neck") if self.is_vit else None
        self.decoder = UperNetDecoder(num_classes, channels, pool_scales, dropout, dtype=policy, name="decoder")
        self._build_head()

    def _build_head(self):
        """Build the neck and decoder from the encoder's feature channels (their spatial sizes are read at call
        time)."""
        shapes = [(None, None, None, c) for c in feature_channels(self.encoder)]
        if self.is_vit:
            self.neck.build(shapes)
        self.decoder.build(shapes)
        self.built = True

    def call(self, images, training=None):
        maps = encoder_feature_maps(self.encoder, images, self.block_indices, training=training)
        if self.neck is not None:
            maps = self.neck(maps, training=training)
        logits = self.decoder(maps, training=training)  # (B, h0, w0, K)
        return ops.cast(_resize(logits, _static_size(images)), "float32")

    def get_config(self):
        return {**super().get_config(), "encoder": keras.saving.serialize_keras_object(self.encoder),
                "num_classes": self.num_classes, "channels": self.channels, "pool_scales": self.pool_scales,
                "block_indices": self.block_indices, "dropout": self.dropout}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)
