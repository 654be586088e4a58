"""KerasHub ``.keras`` files written without KerasHub: the exact layout that keras-hub 0.32.0's ``ViTBackbone`` and
``ResNetBackbone(block_type="basic_block")`` get from ``model.save`` under Keras 3.15.1 (checked against real
files by ``test_keras_hub.py::test_the_written_layout_is_keras_hubs`` where keras-hub is installed).

keras-hub is not a test dependency: it requires tensorflow-text (a TensorFlow build of its own) and imports
TensorFlow even on the torch backend. Weights come from timm / torchvision state dicts (PyTorch layouts) so that
the forward passes of ``references.py`` are the reference.
"""

import json
import zipfile

import numpy as np

KERAS_VERSION = "3.15.1"
DTYPE = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}


def write_keras_file(path, config, layers, root_name):
    """A ``.keras`` zip: ``config.json``, ``metadata.json`` and ``model.weights.h5`` whose groups are ``layers``
    (``{h5 group: (layer name, [arrays])}``), each with a ``vars`` subgroup named by the attribute ``name``."""
    import h5py

    weights = path.with_suffix(".weights.h5.tmp")
    with h5py.File(weights, "w") as file:
        file.create_group("vars").attrs["name"] = root_name
        for group, (name, arrays) in layers.items():
            variables = file.require_group(f"{group}/vars")
            variables.attrs["name"] = name
            for index, array in enumerate(arrays):
                variables.create_dataset(str(index), data=np.asarray(array, np.float32))
    with zipfile.ZipFile(path, "w") as archive:
        metadata = {"keras_version": KERAS_VERSION, "date_saved": "2026-01-01@00:00:00"}
        archive.writestr("metadata.json", json.dumps(metadata))
        archive.writestr("config.json", json.dumps(config))
        archive.write(weights, "model.weights.h5")
    weights.unlink()
    return path


def vit_backbone_config(image_size, patch_size, channels, depth, num_heads, dim, mlp_dim, **overrides):
    """``config.json`` of a ``keras_hub.models.ViTBackbone`` (keras-hub 0.32.0)."""
    arguments = {"name": "vi_t_backbone", "trainable": True, "dtype": DTYPE,
                 "image_shape": [image_size, image_size, channels], "patch_size": [patch_size, patch_size],
                 "num_layers": depth, "num_heads": num_heads, "hidden_dim": dim, "mlp_dim": mlp_dim,
                 "dropout_rate": 0.0, "attention_dropout": 0.0, "layer_norm_epsilon": 1e-06, "use_mha_bias": True,
                 "use_mlp_bias": True, "use_class_token": True, "use_patch_bias": True, **overrides}
    return {"module": "keras_hub.src.models.vit.vit_backbone", "class_name": "ViTBackbone", "config": arguments,
            "registered_name": "keras_hub>ViTBackbone", "build_config": {"input_shape": None}, "compile_config": {}}


def resnet_backbone_config(channels, **overrides):
    """``config.json`` of a ResNet-18 ``keras_hub.models.ResNetBackbone`` (keras-hub 0.32.0)."""
    arguments = {"name": "res_net_backbone", "trainable": True, "dtype": DTYPE, "input_conv_filters": [64],
                 "input_conv_kernel_sizes": [7], "stackwise_num_filters": [64, 128, 256, 512],
                 "stackwise_num_blocks": [2, 2, 2, 2], "stackwise_num_strides": [1, 2, 2, 2],
                 "block_type": "basic_block", "use_pre_activation": False, "image_shape": [None, None, channels],
                 **overrides}
    return {"module": "keras_hub.src.models.resnet.resnet_backbone", "class_name": "ResNetBackbone",
            "config": arguments, "registered_name": "keras_hub>ResNetBackbone", "build_config": {"input_shape": None},
            "compile_config": {}}


def vit_layers_from_timm(timm, num_heads):
    """A timm ViT state dict in ``ViTBackbone``'s groups: Conv2D patch kernel ``(p, p, C, D)``, one ``Embedding``
    of ``1 + N`` positions (CLS first), ``MultiHeadAttention`` EinsumDense kernels ``(D, H, D/H)`` / ``(H, D/H, D)``,
    Dense kernels ``(in, out)``."""
    dim = timm["cls_token"].shape[-1]
    head_dim = dim // num_heads
    embedding = "layers/vi_t_patching_and_embedding"
    layers = {
        "layers/input_layer": ("images", []),
        embedding: ("vit_patching_and_embedding", [timm["cls_token"]]),
        f"{embedding}/patch_embedding": ("patch_embedding", [timm["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
                                                             timm["patch_embed.proj.bias"]]),
        f"{embedding}/position_embedding": ("position_embedding", [timm["pos_embed"][0]]),
        "layers/vi_t_encoder": ("vit_encoder", []),
        "layers/vi_t_encoder/layer_norm": ("ln", [timm["norm.weight"], timm["norm.bias"]]),
    }
    depth = 0
    while f"blocks.{depth}.norm1.weight" in timm:
        depth += 1
    for i in range(depth):
        t = lambda name: timm[f"blocks.{i}.{name}"]  # noqa: E731
        block = "layers/vi_t_encoder/encoder_layers/vi_t_encoder_block" + (f"_{i}" if i else "")
        q, k, v = np.split(t("attn.qkv.weight"), 3, axis=0)  # (D, D) each, (out, in)
        bq, bk, bv = np.split(t("attn.qkv.bias"), 3)
        layers.update({
            block: (f"transformer_block_{i + 1}", []),
            f"{block}/layer_norm_1": ("ln_1", [t("norm1.weight"), t("norm1.bias")]),
            f"{block}/mha": ("mha", []),
            f"{block}/mha/query_dense": ("query", [q.T.reshape(dim, num_heads, head_dim), bq.reshape(num_heads, -1)]),
            f"{block}/mha/key_dense": ("key", [k.T.reshape(dim, num_heads, head_dim), bk.reshape(num_heads, -1)]),
            f"{block}/mha/value_dense": ("value", [v.T.reshape(dim, num_heads, head_dim), bv.reshape(num_heads, -1)]),
            f"{block}/mha/output_dense": ("attention_output",
                                          [t("attn.proj.weight").T.reshape(num_heads, head_dim, dim),
                                           t("attn.proj.bias")]),
            f"{block}/layer_norm_2": ("ln_2", [t("norm2.weight"), t("norm2.bias")]),
            f"{block}/mlp": ("mlp", []),
            f"{block}/mlp/dense_1": ("dense_1", [t("mlp.fc1.weight").T, t("mlp.fc1.bias")]),
            f"{block}/mlp/dense_2": ("dense_2", [t("mlp.fc2.weight").T, t("mlp.fc2.bias")]),
        })
    return layers


def resnet_layers_from_torchvision(tv):
    """A torchvision ``resnet18`` state dict in ``ResNetBackbone``'s groups: functional layers named
    ``conv1_conv``, ``stackS_blockB_{1,0,2}_{conv,bn}`` (0 = projection shortcut), under the snake-cased class
    counters Keras gives them in the model's layer order."""
    rows = [("conv1_conv", "conv1", "conv"), ("conv1_bn", "bn1", "bn")]
    for stage in range(4):
        for block in range(2):
            ours, theirs = f"stack{stage}_block{block}_", f"layer{stage + 1}.{block}."
            parts = [("1", "conv1", "bn1")]
            if theirs + "downsample.0.weight" in tv:
                parts.append(("0", "downsample.0", "downsample.1"))
            parts.append(("2", "conv2", "bn2"))
            rows += [(f"{ours}{part}_conv", theirs + conv, "conv") for part, conv, _ in parts]
            rows += [(f"{ours}{part}_bn", theirs + bn, "bn") for part, _, bn in parts]
    layers, counts = {"layers/input_layer": ("input_layer", [])}, {"conv": 0, "bn": 0}
    # Keras counts Conv2D and BatchNormalization layers separately, each in the model's (block) order.
    for name, theirs, kind in sorted(rows, key=lambda row: _layer_order(row[0])):
        count = counts[kind]
        counts[kind] += 1
        group = ("layers/conv2d" if kind == "conv" else "layers/batch_normalization") + (f"_{count}" if count else "")
        if kind == "conv":
            arrays = [tv[theirs + ".weight"].transpose(2, 3, 1, 0)]
        else:
            arrays = [tv[f"{theirs}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
        layers[group] = (name, arrays)
    return layers


def _layer_order(name):
    if name.startswith("conv1"):
        return (-1, 0, 0)
    stack, block, part = name.split("_")[:3]
    return (int(stack[5:]), int(block[5:]), {"1": 0, "0": 1, "2": 2}[part])
