"""Tiny random reference models from Hugging Face ``transformers`` (a test-only dependency) and the NumPy /
torch plumbing the interop tests share. ``transformers`` is imported without TensorFlow (``USE_TF=0``)."""

import os

import numpy as np
import pytest

os.environ.setdefault("USE_TF", "0")  # transformers 4.x would import TensorFlow (slow; SPEC §10 traps)
os.environ.setdefault("USE_FLAX", "0")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
           patch_size=8, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
RESNET = dict(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[8, 16, 32, 64], embedding_size=8)


def hf_vit(channels=1, seed=0, **overrides):
    """A random ``transformers.ViTModel`` in eval mode, with non-trivial CLS and position embeddings."""
    torch.manual_seed(seed)
    model = transformers.ViTModel(transformers.ViTConfig(**{**VIT, "num_channels": channels, **overrides})).eval()
    with torch.no_grad():
        model.embeddings.cls_token.normal_(0, 0.5)
        model.embeddings.position_embeddings.normal_(0, 0.5)
        model.layernorm.weight.uniform_(0.5, 1.5)
    return model


def hf_resnet(channels=1, seed=0):
    """A random ``transformers.ResNetModel`` (basic blocks = ResNet-18 layout) with random BatchNorm statistics."""
    torch.manual_seed(seed)
    return randomise_batchnorms(transformers.ResNetModel(transformers.ResNetConfig(**RESNET, num_channels=channels))
                                .eval())


def randomise_batchnorms(model):
    """Random statistics, scales and shifts for every ``BatchNorm2d`` of a torch model (in place; returned)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
    return model


def randomised(encoder, seed=0):
    """Give every weight (BatchNorm statistics included) random values, so that no mapping error hides."""
    rng = np.random.default_rng(seed)
    for variable in encoder.weights:
        shape = tuple(variable.shape)
        name = variable.path
        if "variance" in name or "gamma" in name:
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) >= 2 and "position" not in name:  # kernels: unit-variance outputs
            value = rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
        else:
            value = rng.normal(0, 0.3, shape)
        variable.assign(value.astype("float32"))
    return encoder


def numpy_state(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def images(shape, seed=0):
    """``(B, H, W, C)`` float32 images in [0, 1] (kmedssl's input)."""
    return np.random.default_rng(seed).random(shape).astype("float32")


def nchw(x, mean=0.5, std=0.25):
    """kmedssl's input -> what the torch reference sees: normalised as kmedssl normalises, NCHW."""
    return torch.from_numpy(np.ascontiguousarray(((x - mean) / std).transpose(0, 3, 1, 2)))


def vit_tokens(model, x, **kwargs):
    with torch.no_grad():
        return model(nchw(x), **kwargs).last_hidden_state.numpy()


def resnet_features(model, x, mean=0.5, std=0.25):
    with torch.no_grad():
        return model(nchw(x, mean, std)).pooler_output.numpy()[:, :, 0, 0]


# === Forward passes written from timm's and torchvision's sources, keyed by their state-dict names ===


def timm_vit_tokens(state, x, num_heads, eps=1e-6):
    """timm ``VisionTransformer.forward_features`` (class token, absolute positions, pre-norm blocks) in
    float64 torch functional ops over a timm-named state dict; ``x`` as kmedssl takes it."""
    import torch.nn.functional as F

    w = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in state.items()}
    p = w["patch_embed.proj.weight"].shape[-1]
    t = F.conv2d(nchw(x).double(), w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=p)
    t = t.flatten(2).transpose(1, 2)  # (B, N, D)
    t = torch.cat([w["cls_token"].expand(t.shape[0], -1, -1), t], dim=1) + w["pos_embed"]
    batch, length, dim = t.shape
    i = 0
    while f"blocks.{i}.norm1.weight" in w:
        b = f"blocks.{i}."
        h = F.layer_norm(t, (dim,), w[b + "norm1.weight"], w[b + "norm1.bias"], eps)
        qkv = F.linear(h, w[b + "attn.qkv.weight"], w[b + "attn.qkv.bias"])
        q, k, v = qkv.reshape(batch, length, 3, num_heads, dim // num_heads).permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-2, -1) * (dim // num_heads) ** -0.5, dim=-1)
        h = (attention @ v).transpose(1, 2).reshape(batch, length, dim)
        t = t + F.linear(h, w[b + "attn.proj.weight"], w[b + "attn.proj.bias"])
        h = F.layer_norm(t, (dim,), w[b + "norm2.weight"], w[b + "norm2.bias"], eps)
        h = F.linear(F.gelu(F.linear(h, w[b + "mlp.fc1.weight"], w[b + "mlp.fc1.bias"])), w[b + "mlp.fc2.weight"],
                     w[b + "mlp.fc2.bias"])
        t = t + h
        i += 1
    return F.layer_norm(t, (dim,), w["norm.weight"], w["norm.bias"], eps).numpy()


def torchvision_resnet_features(state, x, stem="imagenet", mean=0.5, std=0.25):
    """torchvision ``ResNet`` (``BasicBlock`` or ``Bottleneck`` v1.5, any blocks per stage, read from the names) up
    to the average pool, in float64 torch functional ops over a torchvision-named state dict; ``x`` as kmedssl
    takes it, normalised with ``mean`` / ``std``. ``stem="cifar"`` is the usual small-image variant (conv1 3x3
    stride 1 padding 1, ``maxpool = Identity``)."""
    import torch.nn.functional as F

    w = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in state.items()}

    def bn(t, name):
        return F.batch_norm(t, w[name + ".running_mean"], w[name + ".running_var"], w[name + ".weight"],
                            w[name + ".bias"], training=False, eps=1e-5)

    t = nchw(x, mean, std).double()
    if stem == "imagenet":
        t = F.max_pool2d(F.relu(bn(F.conv2d(t, w["conv1.weight"], stride=2, padding=3), "bn1")), 3, 2, 1)
    else:
        t = F.relu(bn(F.conv2d(t, w["conv1.weight"], stride=1, padding=1), "bn1"))
    for layer in range(1, 5):
        block = 0
        while f"layer{layer}.{block}.conv1.weight" in w:
            b = f"layer{layer}.{block}."
            stride = 2 if layer > 1 and block == 0 else 1
            if b + "conv3.weight" in w:  # Bottleneck: 1x1, 3x3 with the stride, 1x1
                out = F.relu(bn(F.conv2d(t, w[b + "conv1.weight"]), b + "bn1"))
                out = F.relu(bn(F.conv2d(out, w[b + "conv2.weight"], stride=stride, padding=1), b + "bn2"))
                out = bn(F.conv2d(out, w[b + "conv3.weight"]), b + "bn3")
            else:  # BasicBlock: 3x3 with the stride, 3x3
                out = F.relu(bn(F.conv2d(t, w[b + "conv1.weight"], stride=stride, padding=1), b + "bn1"))
                out = bn(F.conv2d(out, w[b + "conv2.weight"], padding=1), b + "bn2")
            if b + "downsample.0.weight" in w:
                t = bn(F.conv2d(t, w[b + "downsample.0.weight"], stride=stride), b + "downsample.1")
            t = F.relu(out + t)
            block += 1
    return t.mean(dim=(2, 3)).numpy()


def torchvision_resnet_shapes(block="basic", depths=(2, 2, 2, 2), channels=3, width=64, num_classes=1000):
    """``{name: shape}`` of torchvision's ``resnet18`` (``block="basic"``) / ``resnet50`` (``"bottleneck"``,
    ``depths=(3, 4, 6, 3)``) state dict with ``num_classes`` outputs, written from its source (``width`` is the
    first stage's base width, 64 there)."""
    expansion = 4 if block == "bottleneck" else 1
    shapes = {"conv1.weight": (width, channels, 7, 7)}

    def bn(name, c):
        shapes.update({f"{name}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")})
        shapes[f"{name}.num_batches_tracked"] = ()

    bn("bn1", width)
    in_c = width
    for layer, depth in zip(range(1, 5), depths):
        c = width * 2 ** (layer - 1)
        for index in range(depth):
            b = f"layer{layer}.{index}."
            if block == "bottleneck":
                convs = [(c, in_c, 1, 1), (c, c, 3, 3), (c * expansion, c, 1, 1)]
            else:
                convs = [(c, in_c, 3, 3), (c, c, 3, 3)]
            for k, shape in enumerate(convs, 1):
                shapes[f"{b}conv{k}.weight"] = shape
                bn(f"{b}bn{k}", shape[0])
            if index == 0 and (layer > 1 or in_c != c * expansion):
                shapes[b + "downsample.0.weight"] = (c * expansion, in_c, 1, 1)
                bn(b + "downsample.1", c * expansion)
            in_c = c * expansion
    shapes.update({"fc.weight": (num_classes, in_c), "fc.bias": (num_classes,)})
    return shapes


def torchvision_resnet18_shapes(channels=3, width=64, num_classes=1000):
    """``{name: shape}`` of torchvision's ``resnet18(num_classes)`` state dict, written from its source."""
    return torchvision_resnet_shapes("basic", (2, 2, 2, 2), channels, width, num_classes)


def random_state(shapes, seed=0):
    """A random state dict of ``shapes`` (torchvision names): unit-variance convolutions, BatchNorm scales and
    variances in [0.5, 1.5], shifts and means N(0, 0.3), zero counters."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            state[name] = np.zeros((), np.int64)
        elif name.endswith(("running_var", "weight")) and len(shape) == 1:
            state[name] = rng.uniform(0.5, 1.5, shape).astype("float32")
        elif len(shape) > 1:
            state[name] = rng.normal(0, 1 / np.sqrt(np.prod(shape[1:])), shape).astype("float32")
        else:
            state[name] = rng.normal(0, 0.3, shape).astype("float32")
    return state
