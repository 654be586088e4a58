"""Name <-> name maps between kmedssl encoders and other libraries' state dicts, in NumPy alone (no backend).

A *kmedssl state* is ``{name: np.ndarray}`` keyed by the encoder's weight paths without the model's name
(``"block_0/attention/qkv/kernel"``, ``"stage_2_block_1/conv_1/kernel"``), in Keras layouts: Dense kernels
``(in, out)``, convolution kernels ``(kh, kw, in, out)``, images channels-last. Other libraries' state dicts are
PyTorch layouts: Linear weights ``(out, in)``, convolution weights ``(out, in, kh, kw)``, images NCHW.

Layouts (``detect_layout``):

- ``"timm-vit"``: timm ``VisionTransformer`` (``vit_tiny_patch16_224`` ...): ``patch_embed.proj``, ``cls_token``,
  ``pos_embed``, ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``.
- ``"transformers-vit"``: Hugging Face ``ViTModel`` (``embeddings.*``, ``encoder.layer.N.*``, ``layernorm``);
  ``ViTForImageClassification``'s ``vit.`` prefix is removed.
- ``"torchvision-resnet"``: torchvision ``resnet18`` / ``resnet50`` (``conv1``, ``bn1``, ``layerS.B.{conv1, bn1,
  conv2, bn2[, conv3, bn3], downsample.0, downsample.1}``, ``fc``); MONAI's 2-D ``ResNet`` (basic or bottleneck
  blocks, shortcut type B) uses the same names; RadImageNet's PyTorch ResNet-50 numbers torchvision's children
  (``backbone.0``, ``backbone.4.B.conv1`` ...: ``strip_prefixes``). Basic or bottleneck blocks and their counts
  per stage are read from the names.
- ``"transformers-resnet"``: Hugging Face ``ResNetModel`` with ``layer_type="basic"`` or ``"bottleneck"``
  (``embedder.*``, ``encoder.stages.S.layers.B.*``); ``ResNetForImageClassification``'s ``resnet.`` prefix is
  removed.
- ``"transformers-swin"``: Hugging Face ``SwinModel`` (``embeddings.*``, ``encoder.layers.S.blocks.B.*``,
  ``encoder.layers.S.downsample.*``, ``layernorm``) into a ``SwinTransformer``; ``SwinForImageClassification``'s
  ``swin.`` prefix is removed. Exact (checked in tests/backbones/test_swin.py); no export.
- ``"keras-hub-vit"`` / ``"keras-hub-resnet"``: a KerasHub ``ViTBackbone`` / ``ResNetBackbone`` (basic blocks)
  ``.keras`` file, read by ``keras_files`` and keyed by layer names (``vit_encoder/transformer_block_1/mha/query/0``,
  ``stack1_block0_1_conv/0``); Keras layouts, so no transposes.
- ``"kmedssl"``: a kmedssl state (as ``kmedssl export --to safetensors`` writes it).

What matches exactly (checked against ``transformers`` in tests/interop/):

- ViT: pre-norm blocks, fused qkv with bias, exact (erf) GELU, scaled dot-product attention, final LayerNorm
  and learned position embeddings are the same functions in all three. kmedssl's CLS token carries no
  position: importing adds the source's CLS position to the CLS token (exact); exporting writes a zero CLS
  position. LayerNorm epsilon is a config value (kmedssl and timm 1e-6, transformers 1e-12 by default): build
  the encoder with the source's epsilon for equal outputs (``vit_config_from_transformers`` does).
- ResNet-18 / ResNet-50: torchvision's layout is kmedssl's ``stem="imagenet"`` encoder (7x7/2 conv, 3x3/2
  max-pool, symmetric padding, BatchNorm epsilon 1e-5, bottleneck stride on the 3x3 as torchvision's v1.5);
  ``stem="cifar"`` (3x3/1, no pool) has no transformers counterpart and is refused there.
- Inputs: kmedssl encoders take images in [0, 1] and compute ``(x - input_mean) / input_std`` themselves; the
  other libraries take already normalised NCHW pixels. With no ``source_normalization`` the weights are
  copied as they are (the source model must be fed kmedssl-normalised pixels to agree); with one, the
  source's per-channel normalisation is folded into the first layer (``fold_input_normalization``).
"""

import math

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# RadImageNet's PyTorch example feeds 8-bit pixels p as (p - 127.5) * 2 / 255, i.e. [0, 1] pixels (x - 0.5) / 0.5.
RADIMAGENET_MEAN = (0.5, 0.5, 0.5)
RADIMAGENET_STD = (0.5, 0.5, 0.5)
# ``source_normalization`` names of ``load_into`` and prefixes of ``parse_init``.
SOURCE_NORMALIZATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "radimagenet": (RADIMAGENET_MEAN, RADIMAGENET_STD)}
LAYOUTS = ("kmedssl", "timm-vit", "transformers-vit", "monai-vit", "keras-hub-vit", "torchvision-resnet",
           "transformers-resnet", "keras-hub-resnet", "transformers-swin")
# Source tensors with no kmedssl counterpart that an encoder may drop: classifier heads, poolers, BN counters.
IGNORED_SUFFIXES = ("num_batches_tracked",)
IGNORED_PREFIXES = ("head.", "fc.", "pooler.", "classifier.", "embeddings.mask_token", "head_drop.", "fc_norm.",
                    "classification_head.")
BN_NAMES = (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
            ("moving_variance", "running_var"))


class InteropError(ValueError):
    """A weights file that cannot be read, or whose tensors do not fit the encoder (one line, naming the file)."""


# === Layout detection ===


# torchvision ``ResNet`` children as ``nn.Sequential(*resnet.children())`` numbers them (2 ReLU, 3 max-pool and 8
# average pool hold no weights): RadImageNet's PyTorch ResNet-50 is ``backbone = nn.Sequential(*children[:9])``.
TORCHVISION_RESNET_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4",
                               "9": "fc"}


def strip_prefixes(state):
    """Remove wrappers' name prefixes: ``module.`` (DDP), ``_orig_mod.`` (torch.compile), ``backbone.`` (when every
    name has it), ``vit.`` / ``resnet.`` / ``swin.`` (transformers' task models); ``model.`` / ``encoder.`` of a
    kmedssl-free wrapper are kept. A torchvision ResNet whose children are numbered (``0.weight``,
    ``4.0.conv1.weight``, as RadImageNet's PyTorch ResNet-50 after ``backbone.``) gets torchvision's names
    (``TORCHVISION_RESNET_CHILDREN``)."""
    out = dict(state)
    for prefix in ("module.", "_orig_mod.", "backbone."):
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
    for prefix in ("vit.", "resnet.", "swin."):
        if any(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items() if k.startswith(prefix)}
    if "0.weight" in out and "4.0.conv1.weight" in out:
        out = {".".join([TORCHVISION_RESNET_CHILDREN.get(head, head), *rest]): v
               for (head, *rest), v in ((k.split(".", 1), v) for k, v in out.items())}
    return out


def detect_layout(state):
    """The layout of a state dict (one of ``LAYOUTS``), or an ``InteropError`` saying what was seen."""
    keys = set(state)
    if "patch_embedding.patch_embeddings.weight" in keys:
        return "monai-vit"
    if "blocks.0.attn.qkv.weight" in keys or "patch_embed.proj.weight" in keys:
        return "timm-vit"
    if "encoder.layers.0.blocks.0.layernorm_before.weight" in keys:
        return "transformers-swin"
    if "embeddings.patch_embeddings.projection.weight" in keys:
        return "transformers-vit"
    if "embedder.embedder.convolution.weight" in keys:
        return "transformers-resnet"
    if KERAS_HUB_PATCH + "/0" in keys:
        return "keras-hub-vit"
    if "conv1_conv/0" in keys and "stack0_block0_1_conv/0" in keys:
        if "stack0_block0_3_conv/0" in keys:
            raise InteropError("a keras_hub bottleneck ResNet (ResNet-50 style, stack0_block0_3_conv): kmedssl reads "
                               "keras_hub basic-block ResNets only (bottleneck ones from torchvision, MONAI or "
                               "transformers)")
        return "keras-hub-resnet"
    if "conv1.weight" in keys and "layer1.0.conv1.weight" in keys:
        return "torchvision-resnet"
    if "patch_embedding/kernel" in keys or "stem_conv/kernel" in keys:
        return "kmedssl"
    sample = ", ".join(sorted(keys)[:3])
    raise InteropError(f"unknown state-dict layout (first names: {sample}); expected one of {LAYOUTS}")


# === ViT ===

# (kmedssl suffix, timm suffix, transformers suffix, kind) per transformer block.
VIT_BLOCK = (
    ("attention_norm/gamma", "norm1.weight", "layernorm_before.weight", "copy"),
    ("attention_norm/beta", "norm1.bias", "layernorm_before.bias", "copy"),
    ("attention/proj/kernel", "attn.proj.weight", "attention.output.dense.weight", "linear"),
    ("attention/proj/bias", "attn.proj.bias", "attention.output.dense.bias", "copy"),
    ("mlp_norm/gamma", "norm2.weight", "layernorm_after.weight", "copy"),
    ("mlp_norm/beta", "norm2.bias", "layernorm_after.bias", "copy"),
    ("mlp_hidden/kernel", "mlp.fc1.weight", "intermediate.dense.weight", "linear"),
    ("mlp_hidden/bias", "mlp.fc1.bias", "intermediate.dense.bias", "copy"),
    ("mlp_output/kernel", "mlp.fc2.weight", "output.dense.weight", "linear"),
    ("mlp_output/bias", "mlp.fc2.bias", "output.dense.bias", "copy"),
)
HF_QKV = ("attention.attention.query", "attention.attention.key", "attention.attention.value")


def _block_count(keys, pattern):
    """Number of consecutive blocks ``pattern.format(i)`` present from 0."""
    count = 0
    while pattern.format(count) in keys:
        count += 1
    return count


def patch_kernel_from_torch(weight):
    """Conv2d weight ``(D, C, p, p)`` -> kmedssl patch Dense kernel ``(p * p * C, D)`` (patches flattened (p, p, C))."""
    dim, channels, p, _ = weight.shape
    return np.transpose(weight, (2, 3, 1, 0)).reshape(p * p * channels, dim)


def patch_kernel_to_torch(kernel, channels):
    """Inverse of :func:`patch_kernel_from_torch`."""
    dim = kernel.shape[1]
    p = math.isqrt(kernel.shape[0] // channels)
    return np.transpose(kernel.reshape(p, p, channels, dim), (3, 2, 0, 1))


def _split_positions(pos_embed, source):
    """``(1, [1 +] N, D)`` learned positions -> (CLS position or None, ``(N, D)`` patch positions)."""
    pos = np.asarray(pos_embed).reshape(-1, pos_embed.shape[-1])
    if math.isqrt(pos.shape[0]) ** 2 == pos.shape[0]:  # no CLS position (timm no_embed_class)
        return None, pos
    if math.isqrt(pos.shape[0] - 1) ** 2 != pos.shape[0] - 1:
        raise InteropError(f"{source}: {pos.shape[0]} positions is neither a square grid nor 1 + a square grid")
    return pos[0], pos[1:]


def vit_from_timm(state):
    """timm ViT state dict -> (kmedssl state, {kmedssl name: timm name}, leftover timm names)."""
    state = strip_prefixes(state)
    depth = _block_count(state, "blocks.{}.norm1.weight")
    out, origin = {}, {}
    cls_pos, pos = _split_positions(_need(state, "pos_embed"), "pos_embed")
    cls = _need(state, "cls_token").reshape(1, 1, -1)
    out["cls_token"] = cls if cls_pos is None else cls + cls_pos.reshape(1, 1, -1)
    out["position_embedding"] = pos
    out["patch_embedding/kernel"] = patch_kernel_from_torch(_need(state, "patch_embed.proj.weight"))
    out["patch_embedding/bias"] = _need(state, "patch_embed.proj.bias")
    origin.update({"cls_token": "cls_token", "position_embedding": "pos_embed",
                   "patch_embedding/kernel": "patch_embed.proj.weight",
                   "patch_embedding/bias": "patch_embed.proj.bias"})
    for i in range(depth):
        for ours, theirs, _, kind in VIT_BLOCK + (("attention/qkv/kernel", "attn.qkv.weight", None, "linear"),
                                                  ("attention/qkv/bias", "attn.qkv.bias", None, "copy")):
            name, source = f"block_{i}/{ours}", f"blocks.{i}.{theirs}"
            value = _need(state, source)
            out[name] = value.T if kind == "linear" else value
            origin[name] = source
    for ours, theirs in (("norm/gamma", "norm.weight"), ("norm/beta", "norm.bias")):
        out[ours], origin[ours] = _need(state, theirs), theirs
    used = set(origin.values())
    return out, origin, _leftovers(state, used)


def vit_to_timm(state, channels):
    """kmedssl ViT state of a ``channels``-channel encoder -> timm ViT state dict (CLS position zero; no head)."""
    depth = _block_count(state, "block_{}/attention_norm/gamma")
    dim = state["cls_token"].shape[-1]
    out = {
        "cls_token": state["cls_token"].reshape(1, 1, dim),
        "pos_embed": np.concatenate([np.zeros((1, dim), state["position_embedding"].dtype),
                                     state["position_embedding"]])[None],
        "patch_embed.proj.weight": patch_kernel_to_torch(state["patch_embedding/kernel"], channels),
        "patch_embed.proj.bias": state["patch_embedding/bias"],
        "norm.weight": state["norm/gamma"],
        "norm.bias": state["norm/beta"],
    }
    for i in range(depth):
        for ours, theirs, _, kind in VIT_BLOCK + (("attention/qkv/kernel", "attn.qkv.weight", None, "linear"),
                                                  ("attention/qkv/bias", "attn.qkv.bias", None, "copy")):
            value = state[f"block_{i}/{ours}"]
            out[f"blocks.{i}.{theirs}"] = value.T if kind == "linear" else value
    return {k: np.array(v, order="C") for k, v in out.items()}


def vit_from_transformers(state):
    """Hugging Face ``ViTModel`` state dict -> (kmedssl state, {kmedssl name: transformers name}, leftovers)."""
    state = strip_prefixes(state)
    depth = _block_count(state, "encoder.layer.{}.layernorm_before.weight")
    out, origin, used = {}, {}, set()
    cls_pos, pos = _split_positions(_need(state, "embeddings.position_embeddings"), "embeddings.position_embeddings")
    cls = _need(state, "embeddings.cls_token").reshape(1, 1, -1)
    out["cls_token"] = cls if cls_pos is None else cls + cls_pos.reshape(1, 1, -1)
    out["position_embedding"] = pos
    patch_weight = _need(state, "embeddings.patch_embeddings.projection.weight")
    out["patch_embedding/kernel"] = patch_kernel_from_torch(patch_weight)
    out["patch_embedding/bias"] = _need(state, "embeddings.patch_embeddings.projection.bias")
    origin.update({"cls_token": "embeddings.cls_token", "position_embedding": "embeddings.position_embeddings",
                   "patch_embedding/kernel": "embeddings.patch_embeddings.projection.weight",
                   "patch_embedding/bias": "embeddings.patch_embeddings.projection.bias"})
    for i in range(depth):
        prefix = f"encoder.layer.{i}."
        for ours, _, theirs, kind in VIT_BLOCK:
            value = _need(state, prefix + theirs)
            out[f"block_{i}/{ours}"] = value.T if kind == "linear" else value
            origin[f"block_{i}/{ours}"] = prefix + theirs
        weights = [_need(state, f"{prefix}{part}.weight") for part in HF_QKV]
        biases = [_need(state, f"{prefix}{part}.bias") for part in HF_QKV]
        out[f"block_{i}/attention/qkv/kernel"] = np.concatenate(weights, axis=0).T  # (D, 3D): [q | k | v]
        out[f"block_{i}/attention/qkv/bias"] = np.concatenate(biases)
        origin[f"block_{i}/attention/qkv/kernel"] = f"{prefix}{HF_QKV[0]}.weight"
        origin[f"block_{i}/attention/qkv/bias"] = f"{prefix}{HF_QKV[0]}.bias"
        used.update(f"{prefix}{part}.{kind}" for part in HF_QKV for kind in ("weight", "bias"))
    for ours, theirs in (("norm/gamma", "layernorm.weight"), ("norm/beta", "layernorm.bias")):
        out[ours], origin[ours] = _need(state, theirs), theirs
    return out, origin, _leftovers(state, used | set(origin.values()))


def vit_to_transformers(state, channels):
    """kmedssl ViT state of a ``channels``-channel encoder -> Hugging Face ``ViTModel`` state dict (CLS position
    zero; no pooler)."""
    timm = vit_to_timm(state, channels)
    depth = _block_count(state, "block_{}/attention_norm/gamma")
    out = {
        "embeddings.cls_token": timm["cls_token"],
        "embeddings.position_embeddings": timm["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": timm["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": timm["patch_embed.proj.bias"],
        "layernorm.weight": timm["norm.weight"],
        "layernorm.bias": timm["norm.bias"],
    }
    for i in range(depth):
        for ours, theirs_timm, theirs, _ in VIT_BLOCK:
            out[f"encoder.layer.{i}.{theirs}"] = timm[f"blocks.{i}.{theirs_timm}"]
        qkv_w = np.split(timm[f"blocks.{i}.attn.qkv.weight"], 3, axis=0)
        qkv_b = np.split(timm[f"blocks.{i}.attn.qkv.bias"], 3)
        for part, w, b in zip(HF_QKV, qkv_w, qkv_b):
            out[f"encoder.layer.{i}.{part}.weight"] = w
            out[f"encoder.layer.{i}.{part}.bias"] = b
    return {k: np.array(v, order="C") for k, v in out.items()}


# MONAI ``ViT`` (``proj_type="conv"``, learnable positions) names that differ from timm's; the rest are equal.
MONAI_FROM_TIMM = {"patch_embed.proj.": "patch_embedding.patch_embeddings.", "pos_embed": "patch_embedding.position_embeddings",
                   "attn.proj.": "attn.out_proj.", "mlp.fc1.": "mlp.linear1.", "mlp.fc2.": "mlp.linear2."}
MONAI_LAYER_NORM_EPSILON = 1e-5  # MONAI's nn.LayerNorm default; not a MONAI argument


def _rename(name, table):
    for old, new in table.items():
        if old in name:
            return name.replace(old, new)
    return name


def vit_from_monai(state):
    """MONAI ``monai.networks.nets.ViT`` (2-D, conv patches, with a CLS token: ``classification=True``) state
    dict -> (kmedssl state, {kmedssl name: MONAI name}, leftovers). MONAI adds no position to its CLS token
    (as kmedssl); ``qkv_bias=False`` reads as zero biases; the unused ``norm_cross_attn`` and the
    ``classification_head`` are dropped."""
    state = strip_prefixes(state)
    back = {_rename(k, {v: k for k, v in MONAI_FROM_TIMM.items()}): k for k in state
            if ".norm_cross_attn." not in k}
    timm = {name: state[monai] for name, monai in back.items()}
    depth = _block_count(timm, "blocks.{}.norm1.weight")
    for i in range(depth):
        if f"blocks.{i}.attn.qkv.bias" not in timm:  # qkv_bias=False
            timm[f"blocks.{i}.attn.qkv.bias"] = np.zeros(_need(timm, f"blocks.{i}.attn.qkv.weight").shape[0],
                                                         np.float32)
    if "cls_token" not in timm:
        raise InteropError("a MONAI ViT without a CLS token (classification=False): kmedssl's ViT has one")
    out, origin, leftovers = vit_from_timm(timm)
    origin = {ours: back.get(theirs, theirs) for ours, theirs in origin.items()}
    return out, origin, [back.get(name, name) for name in leftovers]


def vit_to_monai(state, channels):
    """kmedssl ViT state -> MONAI ``ViT`` state dict for ``vit_config_to_monai``'s arguments: the identity as
    ``classification_head`` (so ``model(x)[0]`` is the CLS feature) and the unused ``norm_cross_attn`` at
    LayerNorm's initial values, so that ``load_state_dict`` is strict."""
    timm = vit_to_timm(state, channels)
    timm["pos_embed"] = timm["pos_embed"][:, 1:]  # MONAI has no CLS position (kmedssl's is in the CLS token)
    out = {_rename(name, MONAI_FROM_TIMM): value for name, value in timm.items()}
    dim = state["cls_token"].shape[-1]
    for i in range(_block_count(state, "block_{}/attention_norm/gamma")):
        out[f"blocks.{i}.norm_cross_attn.weight"] = np.ones(dim, np.float32)
        out[f"blocks.{i}.norm_cross_attn.bias"] = np.zeros(dim, np.float32)
    out["classification_head.weight"] = np.eye(dim, dtype=np.float32)
    out["classification_head.bias"] = np.zeros(dim, np.float32)
    return {k: np.array(v, order="C") for k, v in out.items()}


def vit_config_to_monai(config):
    """``VisionTransformer.get_config()`` -> the keyword arguments of ``monai.networks.nets.ViT``."""
    return {"in_channels": config["channels"], "img_size": [config["image_size"]] * 2,
            "patch_size": [config["patch_size"]] * 2, "hidden_size": config["dim"],
            "mlp_dim": int(config["dim"] * config["mlp_ratio"]), "num_layers": config["depth"],
            "num_heads": config["num_heads"], "proj_type": "conv", "pos_embed_type": "learnable",
            "classification": True, "num_classes": config["dim"], "post_activation": None, "dropout_rate": 0.0,
            "spatial_dims": 2, "qkv_bias": True}


def transformers_config_problems(c):
    """What a transformers ViT or Swin config ``c`` (a dict) sets that kmedssl cannot express, one string each:
    ``qkv_bias=False``, an activation other than exact GELU, a non-square image or patch."""
    problems = []
    if not c.get("qkv_bias", True):
        problems.append("qkv_bias=False (kmedssl's qkv has a bias)")
    if c.get("hidden_act", "gelu") != "gelu":
        problems.append(f"hidden_act={c.get('hidden_act')!r} (kmedssl uses exact GELU, 'gelu')")
    for key in ("image_size", "patch_size"):
        if isinstance(c.get(key), (list, tuple)) and len(set(c[key])) != 1:
            problems.append(f"{key}={c[key]} (kmedssl is square)")
    return problems


def vit_config_from_transformers(config):
    """``transformers.ViTConfig`` (or its ``config.json`` dict) -> ``VisionTransformer`` keyword arguments.

    Refused (one line): ``qkv_bias=False``, a ``hidden_act`` other than exact GELU, a non-square image or
    patch, and ``intermediate_size`` not a multiple of ``hidden_size`` / 4 that ``mlp_ratio`` cannot express.
    """
    c = config if isinstance(config, dict) else config.to_dict()
    problems = transformers_config_problems(c)
    if problems:
        raise InteropError(f"transformers ViT config not expressible in kmedssl: {'; '.join(problems)}")
    side = lambda v: v[0] if isinstance(v, (list, tuple)) else v  # noqa: E731
    dim = c["hidden_size"]
    return {
        "image_size": side(c["image_size"]), "patch_size": side(c["patch_size"]), "channels": c["num_channels"],
        "dim": dim, "depth": c["num_hidden_layers"], "num_heads": c["num_attention_heads"],
        "mlp_ratio": c["intermediate_size"] / dim, "layer_norm_epsilon": c["layer_norm_eps"],
    }


def vit_config_to_transformers(config):
    """``VisionTransformer.get_config()`` -> a ``transformers.ViTConfig`` ``config.json`` dict."""
    return {
        "architectures": ["ViTModel"], "model_type": "vit",
        "hidden_size": config["dim"], "num_hidden_layers": config["depth"],
        "num_attention_heads": config["num_heads"], "intermediate_size": int(config["dim"] * config["mlp_ratio"]),
        "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02, "layer_norm_eps": config["layer_norm_epsilon"],
        "image_size": config["image_size"], "patch_size": config["patch_size"],
        "num_channels": config["channels"], "qkv_bias": True, "encoder_stride": config["patch_size"],
        "torch_dtype": "float32",
    }


def vit_config_to_timm(config):
    """``VisionTransformer.get_config()`` -> timm ``config.json`` (``architecture`` + ``model_args``)."""
    dim = config["dim"]
    named = {(192, 12, 3): "vit_tiny", (384, 12, 6): "vit_small", (768, 12, 12): "vit_base",
             (1024, 24, 16): "vit_large"}.get((dim, config["depth"], config["num_heads"]), "vit_base")
    return {
        "architecture": f"{named}_patch{config['patch_size']}_224",
        "num_classes": 0, "global_pool": "token",
        "model_args": {"img_size": config["image_size"], "patch_size": config["patch_size"],
                       "in_chans": config["channels"], "embed_dim": dim, "depth": config["depth"],
                       "num_heads": config["num_heads"], "mlp_ratio": config["mlp_ratio"],
                       "num_classes": 0, "global_pool": "token"},
        "pretrained_cfg": {"mean": [config["input_mean"]] * config["channels"],
                           "std": [config["input_std"]] * config["channels"],
                           "input_size": [config["channels"], config["image_size"], config["image_size"]]},
        "layer_norm_eps": config["layer_norm_epsilon"],
    }


# === ResNet-18 / ResNet-50 ===

# Per layout (kmedssl, torchvision, transformers): stem conv, stem BN, a block's prefix (stage s and block b
# 1-based, i = b - 1, j = s - 1), its k-th residual conv and BN (k 1-based, m = k - 1), its shortcut conv and BN.
RESNET_LAYOUTS = (
    ("stem_conv", "stem_bn", "stage_{s}_block_{b}/", "conv_{k}", "bn_{k}", "shortcut_conv", "shortcut_bn"),
    ("conv1", "bn1", "layer{s}.{i}.", "conv{k}", "bn{k}", "downsample.0", "downsample.1"),
    ("embedder.embedder.convolution", "embedder.embedder.normalization", "encoder.stages.{j}.layers.{i}.",
     "layer.{m}.convolution", "layer.{m}.normalization", "shortcut.convolution", "shortcut.normalization"),
)
RESNET_WEIGHT_SUFFIXES = ("/kernel", ".weight", ".weight")  # a convolution's weight, per layout


def _resnet_blocks(keys, column):
    """``(stage, block, residual convolutions, projection shortcut)`` of every block of a state dict in layout
    ``column`` (of ``RESNET_LAYOUTS``), 1-based, in order: 2 residual convolutions = basic, 3 = bottleneck."""
    layout, suffix = RESNET_LAYOUTS[column], RESNET_WEIGHT_SUFFIXES[column]

    def present(field, stage, block, k=1):
        at = dict(s=stage, b=block, i=block - 1, j=stage - 1, k=k, m=k - 1)
        return (layout[2] + layout[field]).format(**at) + suffix in keys

    blocks = []
    for stage in range(1, 5):
        block = 1
        while present(3, stage, block):
            blocks.append((stage, block, 3 if present(3, stage, block, k=3) else 2, present(5, stage, block)))
            block += 1
    return blocks


def _resnet_names(blocks):
    """[(kmedssl prefix, torchvision prefix, transformers prefix, kind)] of a ResNet with ``blocks``
    (``_resnet_blocks``): the stem, then per block its residual convolutions and BatchNorms and its shortcut's
    (each convolution directly followed by its BatchNorm)."""
    rows = [(*(layout[0] for layout in RESNET_LAYOUTS), "conv"), (*(layout[1] for layout in RESNET_LAYOUTS), "bn")]
    for stage, block, convolutions, shortcut in blocks:
        fields = [(3, 4, k) for k in range(1, convolutions + 1)] + ([(5, 6, 0)] if shortcut else [])
        for conv, bn, k in fields:
            at = dict(s=stage, b=block, i=block - 1, j=stage - 1, k=k, m=k - 1)
            for field, kind in ((conv, "conv"), (bn, "bn")):
                rows.append((*((layout[2] + layout[field]).format(**at) for layout in RESNET_LAYOUTS), kind))
    return rows


def _resnet_from(state, column):
    """A conv's bias (MONAI's ``bias_downsample=True`` shortcuts) is folded into the BatchNorm after it:
    ``BN(conv(x) + b)`` has moving mean ``mean - b`` (exact)."""
    state = strip_prefixes(state)
    out, origin, used, bias = {}, {}, set(), None
    for row in _resnet_names(_resnet_blocks(state, column)):
        ours, theirs, kind = row[0], row[column], row[3]
        if kind == "conv":
            out[ours + "/kernel"] = np.transpose(_need(state, theirs + ".weight"), (2, 3, 1, 0))
            origin[ours + "/kernel"] = theirs + ".weight"
            bias = state.get(theirs + ".bias")
            used.add(theirs + ".bias")
        else:
            for k, t in BN_NAMES:
                out[f"{ours}/{k}"] = _need(state, f"{theirs}.{t}")
                origin[f"{ours}/{k}"] = f"{theirs}.{t}"
            if bias is not None:
                out[f"{ours}/moving_mean"] = out[f"{ours}/moving_mean"] - np.asarray(bias)
    return out, origin, _leftovers(state, used | set(origin.values()))


def resnet_from_torchvision(state):
    """torchvision (or MONAI 2-D, shortcut type B) ResNet state dict, basic or bottleneck blocks (ResNet-18,
    ResNet-50, RadImageNet's ResNet-50) -> (kmedssl state, origin, leftovers); ``fc`` is dropped."""
    return _resnet_from(state, 1)


def resnet_from_transformers(state):
    """Hugging Face ``ResNetModel`` (basic or bottleneck layers) state dict -> (kmedssl state, origin, leftovers)."""
    return _resnet_from(state, 2)


def _resnet_to(state, column):
    out = {}
    for row in _resnet_names(_resnet_blocks(state, 0)):
        ours, theirs, kind = row[0], row[column], row[3]
        if kind == "conv":
            out[theirs + ".weight"] = np.transpose(state[ours + "/kernel"], (3, 2, 0, 1))
        else:
            for k, t in BN_NAMES:
                out[f"{theirs}.{t}"] = state[f"{ours}/{k}"]
            out[f"{theirs}.num_batches_tracked"] = np.zeros((), np.int64)
    return {k: np.array(v, order="C") for k, v in out.items()}


def resnet_to_torchvision(state):
    """kmedssl ResNet state -> torchvision ``resnet18`` / ``resnet50`` names, without ``fc`` (load with
    ``strict=False`` after ``model.fc = torch.nn.Identity()``, or replace ``fc`` first)."""
    return _resnet_to(state, 1)


def resnet_to_transformers(state):
    """kmedssl ResNet (``stem="imagenet"``) state -> Hugging Face ``ResNetModel`` state dict."""
    return _resnet_to(state, 2)


def resnet_architecture(config):
    """``(block, depths)`` of a ResNet config: its ``block`` / ``depths`` (a ``ResNet``'s, or added by the caller
    for ``ResNet50``), else ResNet-18's."""
    return config.get("block", "basic"), list(config.get("depths", (2, 2, 2, 2)))


def resnet_config_to_monai(config):
    """``ResNet.get_config()`` (with ``block`` and ``depths``, ``resnet_architecture``) -> the keyword arguments of
    ``monai.networks.nets.ResNet`` for ``resnet_to_torchvision``'s names (no shortcut bias, no ``fc``:
    ``model(x)`` is the pooled feature)."""
    w, stem = config["width"], config["stem"]
    block, depths = resnet_architecture(config)
    return {"block": block, "layers": depths, "block_inplanes": [w, 2 * w, 4 * w, 8 * w], "spatial_dims": 2,
            "n_input_channels": config["channels"], "conv1_t_size": 7 if stem == "imagenet" else 3,
            "conv1_t_stride": 2 if stem == "imagenet" else 1, "no_max_pool": stem != "imagenet",
            "shortcut_type": "B", "bias_downsample": False, "feed_forward": False}


def resnet_config_to_transformers(config):
    """``ResNet.get_config()`` (with ``block`` and ``depths``, ``resnet_architecture``) -> a
    ``transformers.ResNetConfig`` ``config.json`` dict (``stem="imagenet"``)."""
    if config["stem"] != "imagenet":
        raise InteropError(f"transformers' ResNet has a 7x7 stride-2 stem and a max-pool only; this encoder has "
                           f"stem={config['stem']!r} (export it --to safetensors or --to torchvision)")
    w = config["width"]
    block, depths = resnet_architecture(config)
    out = w * (4 if block == "bottleneck" else 1)  # a stage's output channels per unit of its base width
    return {
        "architectures": ["ResNetModel"], "model_type": "resnet", "num_channels": config["channels"],
        "embedding_size": w, "hidden_sizes": [out, 2 * out, 4 * out, 8 * out], "depths": depths,
        "layer_type": block, "hidden_act": "relu", "downsample_in_first_stage": False,
        "downsample_in_bottleneck": False, "torch_dtype": "float32",
    }


# === Swin ===

# transformers ``SwinModel``: the blocks' LayerNorms, output projection and MLP have the ViT's names
# (``VIT_BLOCK``'s third column); q, k, v sit under ``attention.self``.
HF_SWIN_BLOCK = "encoder.layers.{}.blocks.{}."
HF_SWIN_QKV = ("attention.self.query", "attention.self.key", "attention.self.value")
HF_SWIN_MERGE = (("norm/gamma", "norm.weight", "copy"), ("norm/beta", "norm.bias", "copy"),
                 ("reduction/kernel", "reduction.weight", "linear"))


def swin_from_transformers(state):
    """Hugging Face ``SwinModel`` state dict -> (kmedssl ``SwinTransformer`` state, {kmedssl name: transformers
    name}, leftovers). Stages and blocks are read from the names; q, k and v are fused into the qkv kernel
    ``(C, 3C)`` ``[q | k | v]``; the buffers ``relative_position_index`` (recomputed by kmedssl, the same) are
    dropped. ``SwinForImageClassification``'s ``swin.`` prefix is removed."""
    state = strip_prefixes(state)
    out, origin, used = {}, {}, set()
    for ours, theirs in (("patch_embedding/bias", "embeddings.patch_embeddings.projection.bias"),
                         ("patch_norm/gamma", "embeddings.norm.weight"), ("patch_norm/beta", "embeddings.norm.bias"),
                         ("norm/gamma", "layernorm.weight"), ("norm/beta", "layernorm.bias")):
        out[ours], origin[ours] = _need(state, theirs), theirs
    patch = "embeddings.patch_embeddings.projection.weight"
    out["patch_embedding/kernel"] = patch_kernel_from_torch(_need(state, patch))
    origin["patch_embedding/kernel"] = patch
    stages = _block_count(state, "encoder.layers.{}.blocks.0.layernorm_before.weight")
    for s in range(stages):
        for b in range(_block_count(state, HF_SWIN_BLOCK.format(s, "{}") + "layernorm_before.weight")):
            prefix, name = HF_SWIN_BLOCK.format(s, b), f"stage_{s}_block_{b}/"
            for ours, _, theirs, kind in VIT_BLOCK + (("attention/relative_position_bias_table", None,
                                                       "attention.self.relative_position_bias_table", "copy"),):
                value = _need(state, prefix + theirs)
                out[name + ours], origin[name + ours] = (value.T if kind == "linear" else value), prefix + theirs
            weights = [_need(state, f"{prefix}{part}.weight") for part in HF_SWIN_QKV]
            biases = [_need(state, f"{prefix}{part}.bias") for part in HF_SWIN_QKV]
            out[name + "attention/qkv/kernel"] = np.concatenate(weights, axis=0).T  # (C, 3C): [q | k | v]
            out[name + "attention/qkv/bias"] = np.concatenate(biases)
            origin[name + "attention/qkv/kernel"] = f"{prefix}{HF_SWIN_QKV[0]}.weight"
            origin[name + "attention/qkv/bias"] = f"{prefix}{HF_SWIN_QKV[0]}.bias"
            used.update(f"{prefix}{part}.{kind}" for part in HF_SWIN_QKV for kind in ("weight", "bias"))
            used.add(prefix + "attention.self.relative_position_index")
        merge = f"encoder.layers.{s}.downsample."
        if merge + "reduction.weight" in state:
            for ours, theirs, kind in HF_SWIN_MERGE:
                value = _need(state, merge + theirs)
                out[f"merge_{s}/{ours}"] = value.T if kind == "linear" else value
                origin[f"merge_{s}/{ours}"] = merge + theirs
    return out, origin, _leftovers(state, used | set(origin.values()))


def swin_config_from_transformers(config):
    """``transformers.SwinConfig`` (or its ``config.json`` dict) -> ``SwinTransformer`` keyword arguments.

    Refused (one line): absolute position embeddings, ``qkv_bias=False``, a ``hidden_act`` other than exact GELU,
    a non-square image or patch. transformers' patch-embedding and merging LayerNorms use torch's default epsilon
    1e-5 and the others ``layer_norm_eps`` (default 1e-5); kmedssl has one epsilon, ``layer_norm_eps``.
    """
    c = config if isinstance(config, dict) else config.to_dict()
    problems = transformers_config_problems(c)
    if c.get("use_absolute_embeddings", False):
        problems.append("use_absolute_embeddings=True (kmedssl's Swin has relative positions only)")
    if problems:
        raise InteropError(f"transformers Swin config not expressible in kmedssl: {'; '.join(problems)}")
    side = lambda v: v[0] if isinstance(v, (list, tuple)) else v  # noqa: E731
    return {
        "image_size": side(c["image_size"]), "patch_size": side(c["patch_size"]), "channels": c["num_channels"],
        "embed_dim": c["embed_dim"], "depths": list(c["depths"]), "num_heads": list(c["num_heads"]),
        "window_size": c["window_size"], "mlp_ratio": c["mlp_ratio"], "layer_norm_epsilon": c["layer_norm_eps"],
    }


# === KerasHub (``keras_files`` reads the .keras file; names are its layers' names) ===

KERAS_HUB_EMBEDDING = "vit_patching_and_embedding"
KERAS_HUB_PATCH = KERAS_HUB_EMBEDDING + "/patch_embedding"
KERAS_HUB_BLOCK = "vit_encoder/transformer_block_{}/"  # 1-based
# (timm suffix, keras-hub suffix, kind) per block; "dense": a Keras (in, out) kernel, "heads_out": the attention
# output's (heads, head_dim, out) EinsumDense kernel. q, k, v ((in, heads, head_dim) kernels, (heads, head_dim)
# biases) are fused into timm's qkv separately.
KERAS_HUB_VIT_BLOCK = (
    ("norm1.weight", "ln_1/0", "copy"), ("norm1.bias", "ln_1/1", "copy"),
    ("attn.proj.weight", "mha/attention_output/0", "heads_out"),
    ("attn.proj.bias", "mha/attention_output/1", "copy"),
    ("norm2.weight", "ln_2/0", "copy"), ("norm2.bias", "ln_2/1", "copy"),
    ("mlp.fc1.weight", "mlp/dense_1/0", "dense"), ("mlp.fc1.bias", "mlp/dense_1/1", "copy"),
    ("mlp.fc2.weight", "mlp/dense_2/0", "dense"), ("mlp.fc2.bias", "mlp/dense_2/1", "copy"),
)
KERAS_HUB_QKV = ("mha/query", "mha/key", "mha/value")
KERAS_BN = ("gamma", "beta", "moving_mean", "moving_variance")  # a BatchNormalization's variables, in order


def vit_from_keras_hub(state):
    """KerasHub ``ViTBackbone`` weights (``keras_files.read_weights`` names) -> (kmedssl state, {kmedssl name:
    keras-hub name}, leftovers), through timm's names. ``use_mha_bias`` / ``use_mlp_bias`` / ``use_patch_bias``
    ``=False`` read as zero biases (exact); the CLS position (KerasHub's position 0) goes into the CLS token."""
    if KERAS_HUB_EMBEDDING + "/0" not in state:
        raise InteropError("a keras_hub ViT without a class token (use_class_token=False): kmedssl's ViT has one")
    kernel = _need(state, KERAS_HUB_PATCH + "/0")  # (p, p, C, D)
    dim = kernel.shape[-1]
    zeros = lambda n: np.zeros(n, kernel.dtype)  # noqa: E731  (a missing bias)
    timm = {"cls_token": _need(state, KERAS_HUB_EMBEDDING + "/0").reshape(1, 1, dim),
            "pos_embed": _need(state, KERAS_HUB_EMBEDDING + "/position_embedding/0")[None],
            "patch_embed.proj.weight": np.transpose(kernel, (3, 2, 0, 1)),
            "patch_embed.proj.bias": state.get(KERAS_HUB_PATCH + "/1", zeros(dim)),
            "norm.weight": _need(state, "vit_encoder/ln/0"), "norm.bias": _need(state, "vit_encoder/ln/1")}
    back = {"cls_token": KERAS_HUB_EMBEDDING + "/0", "pos_embed": KERAS_HUB_EMBEDDING + "/position_embedding/0",
            "patch_embed.proj.weight": KERAS_HUB_PATCH + "/0", "patch_embed.proj.bias": KERAS_HUB_PATCH + "/1",
            "norm.weight": "vit_encoder/ln/0", "norm.bias": "vit_encoder/ln/1"}
    depth = 0
    while KERAS_HUB_BLOCK.format(depth + 1) + "ln_1/0" in state:
        depth += 1
    for i in range(depth):
        ours, theirs = f"blocks.{i}.", KERAS_HUB_BLOCK.format(i + 1)
        for timm_name, name, kind in KERAS_HUB_VIT_BLOCK:
            if kind == "copy" and name.endswith("/1") and theirs + name not in state:  # use_*_bias=False
                value = zeros(timm[ours + timm_name.replace(".bias", ".weight")].shape[0])
            else:
                value = _need(state, theirs + name)
            if kind == "dense":
                value = value.T
            elif kind == "heads_out":
                value = value.reshape(-1, value.shape[-1]).T
            timm[ours + timm_name], back[ours + timm_name] = value, theirs + name
        kernels = [_need(state, f"{theirs}{part}/0") for part in KERAS_HUB_QKV]  # (D, H, D / H) each
        biases = [state.get(f"{theirs}{part}/1", zeros(dim)).reshape(-1) for part in KERAS_HUB_QKV]
        timm[ours + "attn.qkv.weight"] = np.concatenate([k.reshape(k.shape[0], -1) for k in kernels], axis=1).T
        timm[ours + "attn.qkv.bias"] = np.concatenate(biases)
        back[ours + "attn.qkv.weight"] = theirs + KERAS_HUB_QKV[0] + "/0"
        back[ours + "attn.qkv.bias"] = theirs + KERAS_HUB_QKV[0] + "/1"
    out, origin, _ = vit_from_timm(timm)
    used = set(back.values()) | {f"{KERAS_HUB_BLOCK.format(i + 1)}{part}/{index}" for i in range(depth)
                                 for part in KERAS_HUB_QKV for index in (0, 1)}
    return out, {k: back.get(v, v) for k, v in origin.items()}, _leftovers(state, used)


def resnet_from_keras_hub(state):
    """KerasHub ``ResNetBackbone`` (``block_type="basic_block"``, 7x7 stem, [2, 2, 2, 2]) weights -> (kmedssl
    state, origin, leftovers). Same layers, names and Keras layouts as ``ResNet18(stem="imagenet")``."""
    rows = [("stem_conv", "conv1_conv", "conv"), ("stem_bn", "conv1_bn", "bn")]
    for stage in range(4):
        for block in range(2):
            ours, theirs = f"stage_{stage + 1}_block_{block + 1}/", f"stack{stage}_block{block}_"
            rows += [(ours + "conv_1", theirs + "1_conv", "conv"), (ours + "bn_1", theirs + "1_bn", "bn"),
                     (ours + "conv_2", theirs + "2_conv", "conv"), (ours + "bn_2", theirs + "2_bn", "bn")]
            if theirs + "0_conv/0" in state:
                rows += [(ours + "shortcut_conv", theirs + "0_conv", "conv"),
                         (ours + "shortcut_bn", theirs + "0_bn", "bn")]
    out, origin = {}, {}
    for ours, theirs, kind in rows:
        names = [("kernel", "0")] if kind == "conv" else [(k, str(i)) for i, k in enumerate(KERAS_BN)]
        for k, index in names:
            out[f"{ours}/{k}"], origin[f"{ours}/{k}"] = _need(state, f"{theirs}/{index}"), f"{theirs}/{index}"
    return out, origin, _leftovers(state, set(origin.values()))


def source_num_heads(state):
    """The attention head count a state dict records (KerasHub's ``(D, heads, D / heads)`` query kernels), or
    None: the other layouts fuse heads into ``(D, D)`` matrices, so only a config could tell."""
    kernel = state.get(KERAS_HUB_BLOCK.format(1) + "mha/query/0")
    return None if kernel is None or np.ndim(kernel) != 3 else int(np.shape(kernel)[1])


# === Reading any layout ===

CONVERTERS = {
    "timm-vit": vit_from_timm,
    "transformers-vit": vit_from_transformers,
    "monai-vit": vit_from_monai,
    "torchvision-resnet": resnet_from_torchvision,
    "transformers-resnet": resnet_from_transformers,
    "keras-hub-vit": vit_from_keras_hub,
    "keras-hub-resnet": resnet_from_keras_hub,
    "transformers-swin": swin_from_transformers,
}
EXPORTERS = {  # (family, target) -> function(state, channels)
    ("vit", "timm"): vit_to_timm,
    ("vit", "transformers"): vit_to_transformers,
    ("vit", "monai"): vit_to_monai,
    ("resnet", "monai"): lambda state, channels: resnet_to_torchvision(state),
    ("resnet", "torchvision"): lambda state, channels: resnet_to_torchvision(state),
    ("resnet", "transformers"): lambda state, channels: resnet_to_transformers(state),
}


def to_kmedssl(state):
    """Any supported state dict -> (kmedssl state, {kmedssl name: source name}, leftover source names, layout)."""
    state = strip_prefixes({k: np.asarray(v) for k, v in state.items()})
    layout = detect_layout(state)
    if layout == "kmedssl":
        return state, {k: k for k in state}, [], layout
    out, origin, leftovers = CONVERTERS[layout](state)
    return out, origin, leftovers, layout


def _need(state, name):
    if name not in state:
        raise InteropError(f"missing tensor {name!r}")
    return np.asarray(state[name])


def _leftovers(state, used):
    """Source names neither converted nor ignorable (classifier heads, poolers, BN counters)."""
    return sorted(k for k in state if k not in used and not k.endswith(IGNORED_SUFFIXES)
                  and not k.startswith(IGNORED_PREFIXES))


# === Adapting to an encoder: channels, positions, normalisation ===


def sum_input_channels(kernel, axis, channels):
    """Reduce a first-layer kernel's input-channel ``axis`` to ``channels`` = 1 by summing (RGB -> grey: a grey
    image replicated into R, G, B gives the same output)."""
    if kernel.shape[axis] == channels:
        return kernel
    if channels != 1:
        raise InteropError(f"cannot adapt {kernel.shape[axis]} input channels to {channels} (only to 1, by summing)")
    return kernel.sum(axis=axis, keepdims=True)


def cubic_weights(size_in, size_out, a=-0.75):
    """``(size_out, size_in)`` matrix of 1-D bicubic resampling as ``torch.nn.functional.interpolate(...,
    mode="bicubic", align_corners=False, antialias=False)``: Keys' kernel with ``a = -0.75``, source coordinate
    ``(i + 0.5) * size_in / size_out - 0.5``, border samples repeated."""
    matrix = np.zeros((size_out, size_in), np.float64)
    for i in range(size_out):
        x = (i + 0.5) * size_in / size_out - 0.5
        x0 = math.floor(x)
        t = x - x0
        weights = (
            ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
            ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
        )
        for offset, weight in zip((-1, 0, 1, 2), weights):
            matrix[i, min(max(x0 + offset, 0), size_in - 1)] += weight
    return matrix


def resize_positions(positions, grid_size):
    """``(g * g, D)`` row-major patch positions -> ``(grid_size**2, D)`` by bicubic interpolation of the g x g
    grid (float64, as ``torch.nn.functional.interpolate(mode="bicubic", align_corners=False)``; what timm's
    ``resample_abs_pos_embed`` and transformers' ``interpolate_pos_encoding`` do, without antialiasing)."""
    g = math.isqrt(positions.shape[0])
    if g * g != positions.shape[0]:
        raise InteropError(f"{positions.shape[0]} patch positions is not a square grid")
    if g == grid_size:
        return positions
    grid = positions.astype(np.float64).reshape(g, g, -1)
    matrix = cubic_weights(g, grid_size)
    resized = np.einsum("ij,jkd,lk->ild", matrix, grid, matrix)  # rows, then columns
    return resized.reshape(grid_size * grid_size, -1).astype(positions.dtype)


def fold_input_normalization(state, source_mean, source_std, input_mean, input_std):
    """Make a first layer trained on ``(x - source_mean[c]) / source_std[c]`` inputs (per source channel) take
    kmedssl's ``(x - input_mean) / input_std`` instead, for the same image ``x`` (grey replicated into every
    source channel). Apply before :func:`sum_input_channels`.

    ViT: ``W' = W * input_std / source_std[c]`` and ``b' = b + sum W (input_mean - source_mean[c]) / source_std[c]``
    (exact). ResNet: the same kernel scaling, and the constant goes into the stem BatchNorm's moving mean (exact
    away from the stem's zero-padded border, where the padding value differs).
    """
    state = dict(state)
    channels = len(source_mean)
    if len(source_std) != channels:
        raise InteropError(f"source normalisation: {channels} means but {len(source_std)} standard deviations")
    first = state.get("patch_embedding/kernel", state.get("stem_conv/kernel"))
    rows = first.shape[0] if "patch_embedding/kernel" in state else None
    if (rows is not None and (rows % channels or math.isqrt(rows // channels) ** 2 != rows // channels)) or (
            rows is None and first is not None and first.shape[2] != channels):
        raise InteropError(f"source normalisation for {channels} channels does not fit the first layer's kernel "
                           f"{tuple(first.shape)}")
    if "patch_embedding/kernel" in state:
        kernel = state["patch_embedding/kernel"].astype(np.float64)
        k = kernel.reshape(-1, channels, kernel.shape[1])  # (p*p, C, D)
        shift = (input_mean - np.asarray(source_mean)) / np.asarray(source_std)  # (C,)
        bias = state["patch_embedding/bias"] + np.einsum("pcd,c->d", k, shift)
        k = k * (input_std / np.asarray(source_std))[None, :, None]
        state["patch_embedding/kernel"] = k.reshape(kernel.shape).astype(state["patch_embedding/kernel"].dtype)
        state["patch_embedding/bias"] = bias.astype(state["patch_embedding/bias"].dtype)
    elif "stem_conv/kernel" in state:
        kernel = state["stem_conv/kernel"].astype(np.float64)  # (kh, kw, C, O)
        shift = (input_mean - np.asarray(source_mean)) / np.asarray(source_std)
        delta = np.einsum("hwco,c->o", kernel, shift)
        state["stem_conv/kernel"] = (kernel * (input_std / np.asarray(source_std))[None, None, :, None]).astype(
            state["stem_conv/kernel"].dtype)
        state["stem_bn/moving_mean"] = (state["stem_bn/moving_mean"] - delta).astype(state["stem_bn/moving_mean"].dtype)
    return state


def adapt(state, expected_shapes, config, source_normalization=None):
    """Fit a kmedssl state to an encoder whose weights have ``expected_shapes`` ({name: shape}): fold the source
    normalisation, sum RGB first-layer kernels to 1 channel, interpolate ViT positions to the encoder's grid."""
    if source_normalization is not None:
        mean, std = source_normalization
        state = fold_input_normalization(state, mean, std, config["input_mean"], config["input_std"])
    state = dict(state)
    channels = config["channels"]
    if "patch_embedding/kernel" in state and "patch_embedding/kernel" in expected_shapes:
        kernel = state["patch_embedding/kernel"]
        source_rows, target_rows = kernel.shape[0], expected_shapes["patch_embedding/kernel"][0]
        if source_rows != target_rows and source_rows % target_rows == 0:
            source_channels = source_rows // target_rows * channels
            k = kernel.reshape(-1, source_channels, kernel.shape[1])
            state["patch_embedding/kernel"] = sum_input_channels(k, 1, channels).reshape(target_rows, -1)
    if "stem_conv/kernel" in state and "stem_conv/kernel" in expected_shapes:
        state["stem_conv/kernel"] = sum_input_channels(state["stem_conv/kernel"], 2,
                                                       expected_shapes["stem_conv/kernel"][2])
    if "position_embedding" in state and "position_embedding" in expected_shapes:
        target = expected_shapes["position_embedding"][0]
        if state["position_embedding"].shape[0] != target and math.isqrt(target) ** 2 == target:
            state["position_embedding"] = resize_positions(state["position_embedding"], math.isqrt(target))
    return state


def _block_hint(state, expected_shapes):
    """`` (the file's ResNet has bottleneck blocks ...)`` when the file's and the encoder's ResNet blocks differ."""
    first, third = "stage_1_block_1/conv_1/kernel", "stage_1_block_1/conv_3/kernel"
    if first not in state or first not in expected_shapes or (third in state) == (third in expected_shapes):
        return ""
    return (" (the file's ResNet has bottleneck blocks, ResNet-50 style: load it into a ResNet50)" if third in state
            else " (the file's ResNet has basic blocks, ResNet-18 style: load it into a ResNet18)")


def check_fits(state, expected_shapes, origin, leftovers, source):
    """Raise a one-line ``InteropError`` for the first tensor that does not fit: missing, unexpected, or of
    another shape (``name (source name): expected shape ..., received ...``), with a hint where a ResNet's stem
    or block kind differs from the encoder's."""
    block_hint = _block_hint(state, expected_shapes)
    for name, shape in expected_shapes.items():
        if name not in state:
            raise InteropError(f"{source}: no tensor for the encoder's {name!r} (the file's model is smaller or "
                               f"of another kind){block_hint}")
        if tuple(state[name].shape) != tuple(shape):
            hint = block_hint
            if name == "stem_conv/kernel":
                hint = " (stem: 7x7 is stem='imagenet', 3x3 is stem='cifar')" + block_hint
            where = origin.get(name, name)
            raise InteropError(f"{source}: tensor {where!r} -> {name!r}: expected shape {tuple(shape)}, received "
                               f"{tuple(state[name].shape)}{hint}")
    extra = sorted(set(state) - set(expected_shapes))
    if extra:
        raise InteropError(f"{source}: tensor {origin.get(extra[0], extra[0])!r} has no place in the encoder "
                           f"(the file's model is larger or of another kind){block_hint}")
    if leftovers:
        raise InteropError(f"{source}: tensor {leftovers[0]!r} has no counterpart in kmedssl's encoder "
                           f"(an architecture feature kmedssl lacks)")
