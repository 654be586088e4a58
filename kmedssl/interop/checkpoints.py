"""Weights files in and out of kmedssl encoders: read safely, convert (``state_dicts``), assign, export.

Reading never unpickles: ``.safetensors`` is parsed with NumPy (``safetensors_io``), ``.pth``/``.pt``/``.bin`` go
through ``torch.load(weights_only=True, map_location="cpu")`` only, a kmedssl ``.keras`` through kmedssl's
safe-mode ``load_model_file``, a KerasHub ``.keras`` as data (``keras_files``: JSON and HDF5, no KerasHub). A
directory is read through its ``model.safetensors`` (an export, a transformers or timm folder) or its
``encoder.keras`` (a run directory).
"""

import json
import pathlib

import numpy as np

from kmedssl.interop import keras_files, safetensors_io
from kmedssl.interop.state_dicts import (
    EXPORTERS,
    SOURCE_NORMALIZATIONS,
    InteropError,
    adapt,
    check_fits,
    resnet_architecture,
    resnet_config_to_monai,
    resnet_config_to_transformers,
    source_num_heads,
    to_kmedssl,
    vit_config_to_monai,
    vit_config_to_timm,
    vit_config_to_transformers,
)

TARGETS = ("safetensors", "timm", "torchvision", "transformers", "monai", "onnx")
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
KMEDSSL_CONFIG = "kmedssl.json"  # written beside every export: the encoder's class and get_config()
WEIGHTS_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
CONFIG_FILE = "config.json"
# torchvision's constructor of each (block, depths); ``--to torchvision`` writes it as ``architecture``.
TORCHVISION_RESNETS = {("basic", (2, 2, 2, 2)): "resnet18", ("basic", (3, 4, 6, 3)): "resnet34",
                       ("bottleneck", (3, 4, 6, 3)): "resnet50", ("bottleneck", (3, 4, 23, 3)): "resnet101",
                       ("bottleneck", (3, 8, 36, 3)): "resnet152"}


# === Reading ===


def parse_init(spec):
    """``(path, source_normalization)`` of an initialisation: ``"imagenet:PATH"`` (weights trained on
    ImageNet-normalised RGB) or ``"radimagenet:PATH"`` (RadImageNet's pixels scaled to [-1, 1]): that
    normalisation is folded into the first layer, see ``load_into``; or ``PATH`` (weights used as they are).
    Raises ``FileNotFoundError`` (one line naming the path) when it does not exist."""
    text = str(spec)
    normalization = next((name for name in SOURCE_NORMALIZATIONS if text.startswith(name + ":")), None)
    path = pathlib.Path(text.removeprefix(f"{normalization}:") if normalization else text).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: initial weights not found")
    return path, normalization


def read_state_dict(path):
    """``{name: np.ndarray}`` of a weights file or folder, in the file's own names and layouts.

    Accepts ``.safetensors``; ``.pth``/``.pt``/``.bin`` (``torch.load(weights_only=True)``; a ``state_dict`` /
    ``model`` / ``module`` wrapper dict is unwrapped); ``.keras`` (a kmedssl encoder: its kmedssl state; a KerasHub
    ``ViTBackbone`` / ``ResNetBackbone``: its weights keyed by layer names, ``keras_files``); a folder holding
    ``model.safetensors`` or ``encoder.keras``.

    Raises:
        FileNotFoundError: no such file.
        InteropError: unreadable or unsupported file (one line naming it).
    """
    path = pathlib.Path(path)
    if path.is_dir():
        for name in (WEIGHTS_FILE, "encoder.keras", "pytorch_model.bin"):
            if (path / name).is_file():
                return read_state_dict(path / name)
        raise InteropError(f"{path}: a folder without {WEIGHTS_FILE}, encoder.keras or pytorch_model.bin")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return safetensors_io.load_file(path)
    if suffix in TORCH_SUFFIXES:
        return _read_torch(path)
    if suffix == ".keras":
        config = keras_files.read_config(path)
        if keras_files.keras_hub_class(config):
            return keras_files.keras_hub_state(path, config)
        from kmedssl.training.checkpoints import load_model_file

        return encoder_state(load_model_file(path))
    raise InteropError(f"{path}: unsupported weights file (expected .safetensors, {', '.join(TORCH_SUFFIXES)} "
                       f"or .keras)")


def _read_torch(path):
    from kmedssl.ops.torch_files import load_weights_only, numpy_tensors  # here: kmedssl.ops imports Keras
    # (kmedssl.cli must not import Keras)

    try:
        state = load_weights_only(path)
    except ImportError:
        raise InteropError(f"{path}: reading a PyTorch file needs torch (pip install torch), or convert it to "
                           f".safetensors") from None
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InteropError(f"{path}: not a weights-only PyTorch file ({reason})") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise InteropError(f"{path}: expected a state dict, received {type(state).__name__}")
    return numpy_tensors(state)


# === Encoders ===


def family(encoder):
    """``"vit"``, ``"resnet"`` (``ResNet18``, ``ResNet50``, any ``ResNet``) or ``"swin"`` (``SwinTransformer``) for
    a kmedssl encoder; ``InteropError`` for anything else."""
    from kmedssl.backbones import ResNet, SwinTransformer, VisionTransformer

    if isinstance(encoder, VisionTransformer):
        return "vit"
    if isinstance(encoder, ResNet):
        return "resnet"
    if isinstance(encoder, SwinTransformer):
        return "swin"
    raise InteropError(f"expected a kmedssl VisionTransformer, ResNet (ResNet18, ResNet50) or SwinTransformer. "
                       f"Received: {type(encoder).__name__}")


def encoder_variables(encoder):
    """``{kmedssl name: keras.Variable}`` of a ViT, ResNet or Swin, names as in ``state_dicts`` (model name
    removed)."""
    named = {}

    def add(prefix, layer):
        for variable in layer.weights:
            named[f"{prefix}/{variable.name}" if prefix else variable.name] = variable

    if family(encoder) == "vit":
        named["cls_token"] = encoder.cls_token
        named["position_embedding"] = encoder.position_embedding
        add("patch_embedding", encoder.patch_embedding)
        for block in encoder.blocks:
            for sub in ("attention_norm", "mlp_norm", "mlp_hidden", "mlp_output"):
                add(f"{block.name}/{sub}", getattr(block, sub))
            add(f"{block.name}/attention/qkv", block.attention.qkv)
            add(f"{block.name}/attention/proj", block.attention.proj)
        add("norm", encoder.norm)
    elif family(encoder) == "swin":
        add("patch_embedding", encoder.patch_embedding)
        add("patch_norm", encoder.patch_norm)
        for block in encoder.blocks:
            for sub in ("attention_norm", "mlp_norm", "mlp_hidden", "mlp_output"):
                add(f"{block.name}/{sub}", getattr(block, sub))
            add(f"{block.name}/attention/qkv", block.attention.qkv)
            add(f"{block.name}/attention/proj", block.attention.proj)
            named[f"{block.name}/attention/relative_position_bias_table"] = block.attention.relative_position_bias_table
        for merge in encoder.merges:
            add(f"{merge.name}/norm", merge.norm)
            add(f"{merge.name}/reduction", merge.reduction)
        add("norm", encoder.norm)
    else:
        for layer in encoder.stem_layers:
            add(layer.name, layer)
        for block in encoder.blocks:
            for layer in block.residual + block.shortcut:
                add(f"{block.name}/{layer.name}", layer)
    return named


def encoder_state(encoder):
    """``{kmedssl name: np.ndarray}`` of a kmedssl encoder's weights."""
    import keras

    return {name: np.asarray(keras.ops.convert_to_numpy(v.value)) for name, v in encoder_variables(encoder).items()}


def load_into(encoder, path, source_normalization=None):
    """Initialise a built kmedssl encoder from a weights file, in place; returns the encoder.

    Any supported layout (``state_dicts.detect_layout``) of any readable file (``read_state_dict``): timm,
    transformers, MONAI or KerasHub ViT into a ``VisionTransformer``; transformers Swin into a ``SwinTransformer``
    of the same architecture; torchvision, MONAI, transformers or KerasHub
    ResNet-18 into a ``ResNet18`` (``stem="imagenet"``); torchvision, MONAI, transformers or RadImageNet ResNet-50
    into a ``ResNet50``; kmedssl's own exports and ``.keras`` encoders. RGB first layers are summed to the
    encoder's 1 channel; ViT positions are interpolated (bicubic) to the encoder's grid.

    Args:
        encoder: a built ``VisionTransformer`` or ``ResNet`` (``ResNet18``, ``ResNet50``).
        path: the weights file or folder.
        source_normalization: None (copy the weights as they are: the source model saw the same normalised
            pixels kmedssl computes), ``"imagenet"``, ``"radimagenet"`` (``SOURCE_NORMALIZATIONS``), or
            ``(mean, std)`` per source channel: the normalisation the source was trained with, folded into the
            first layer (``fold_input_normalization``).

    Raises:
        InteropError: one line naming the file and the first tensor that does not fit (name, expected shape,
            received shape), or why the file cannot be read.
    """
    state = read_state_dict(path)
    try:
        heads = source_num_heads(state)
        if heads is not None and family(encoder) == "vit" and heads != encoder.num_heads:
            raise InteropError(f"the file's ViT has num_heads={heads}, the encoder num_heads={encoder.num_heads}")
        state, origin, leftovers, _ = to_kmedssl(state)
        variables = encoder_variables(encoder)
        expected = {name: tuple(v.shape) for name, v in variables.items()}
        if isinstance(source_normalization, str):
            source_normalization = SOURCE_NORMALIZATIONS[source_normalization]
        state = adapt(state, expected, encoder.get_config(), source_normalization)
        check_fits(state, expected, origin, leftovers, path)
    except InteropError as error:
        message = str(error)
        raise InteropError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    for name, variable in variables.items():
        variable.assign(np.asarray(state[name], dtype=variable.dtype))
    return encoder


# === Export ===


def load_encoder(source):
    """A kmedssl encoder from a model, an ``ENCODER.keras`` file or a run directory (its ``encoder.keras``)."""
    import keras

    if isinstance(source, keras.Model):
        return source
    from kmedssl.training import runs
    from kmedssl.training.checkpoints import load_model_file

    path = pathlib.Path(source)
    file = path / runs.ENCODER_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"Expected a run directory with {runs.ENCODER_FILE} or an ENCODER.keras file. "
                                f"Received: {str(source)!r} (not found)")
    return load_model_file(file)


def export(source, to, out):
    """Write a kmedssl encoder's weights for another library into the folder ``out``; returns the files written.

    Every target writes ``model.safetensors`` (float32, the target's names and layouts), ``config.json`` (what
    the target needs to rebuild the model) and ``kmedssl.json`` (the encoder's class and ``get_config()``):

    - ``safetensors``: kmedssl names and Keras layouts; ``config.json`` = ``kmedssl.json``.
    - ``transformers``: a folder that ``ViTModel.from_pretrained(out)`` / ``ResNetModel.from_pretrained(out)``
      loads (ViT's pooler, which kmedssl lacks, is left to transformers' random initialisation: use
      ``last_hidden_state[:, 0]``), plus ``preprocessor_config.json`` with the encoder's normalisation.
    - ``timm`` (ViT): timm ``VisionTransformer`` names; ``config.json`` has ``architecture`` and ``model_args``.
    - ``torchvision`` (ResNet-18, ResNet-50): ``resnet18`` / ``resnet50`` names without ``fc``.
    - ``monai``: ``config.json`` holds the keyword arguments of ``monai.networks.nets.ViT`` / ``ResNet``, whose
      ``load_state_dict`` then takes the weights strictly; ``model(x)[0]`` (ViT: the identity as
      ``classification_head``) / ``model(x)`` (ResNet, ``feed_forward=False``) is ``encoder.features``.
    - ``onnx`` (torch backend, packages ``onnx`` and ``onnxscript``): ``model.onnx`` instead of
      ``model.safetensors``, the graph of ``encoder.features`` itself: input ``images`` ``(batch, H, W, C)``
      float32 in [0, 1] (normalised inside, as kmedssl takes them; a ResNet's ``H`` and ``W`` are dynamic too),
      output ``features`` ``(batch, dim)``; ``config.json`` describes both.

    Raises:
        InteropError: a target that cannot express the encoder (e.g. a ``stem="cifar"`` ResNet for transformers),
            or ``onnx`` on another backend or without its packages.
    """
    if to not in TARGETS:
        raise ValueError(f"Expected to in {TARGETS}. Received: to={to!r}")
    if to == "onnx":
        from kmedssl.ops.onnx_export import onnx_export_error

        problem = onnx_export_error()
        if problem:  # before reading anything: this backend or its packages cannot export
            raise InteropError(problem)
    encoder = load_encoder(source)
    kind, config = family(encoder), encoder.get_config()
    own = {"class_name": type(encoder).__name__, "family": kind, "config": _jsonable(config)}
    if to == "onnx":
        return _export_onnx(encoder, kind, config, own, pathlib.Path(out))
    state = {k: v.astype(np.float32) for k, v in encoder_state(encoder).items()}
    if to == "safetensors":
        tensors, target_config = state, own
    elif (kind, to) in EXPORTERS:
        tensors = EXPORTERS[kind, to](state, config["channels"])
        architecture = {"block": encoder.block, "depths": list(encoder.depths)} if kind == "resnet" else {}
        target_config = _target_config(kind, to, {**config, **architecture})
    else:
        allowed = sorted(t for f, t in EXPORTERS if f == kind) + ["safetensors"]
        raise InteropError(f"a kmedssl {kind} cannot be exported --to {to}; expected one of {allowed}")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / WEIGHTS_FILE, out / CONFIG_FILE, out / KMEDSSL_CONFIG]
    safetensors_io.save_file(tensors, written[0], metadata={"format": "pt", "kmedssl_target": to})
    written[1].write_text(json.dumps(target_config, indent=2) + "\n")
    written[2].write_text(json.dumps(own, indent=2) + "\n")
    if to == "transformers":
        channels = config["channels"]
        processor = {"image_processor_type": "ViTImageProcessor" if kind == "vit" else "ConvNextImageProcessor",
                     "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                     "image_mean": [config["input_mean"]] * channels, "image_std": [config["input_std"]] * channels,
                     "do_resize": kind == "vit",
                     "size": {"height": config.get("image_size", 224), "width": config.get("image_size", 224)}}
        written.append(out / "preprocessor_config.json")
        written[-1].write_text(json.dumps(processor, indent=2) + "\n")
    return written


def _export_onnx(encoder, kind, config, own, out):
    """``model.onnx`` of ``encoder.features`` with a dynamic batch (and, for a ResNet, dynamic height and width)."""
    from kmedssl.ops.onnx_export import export_onnx

    channels = config["channels"]
    if kind == "vit":
        size = config["image_size"]
        example, axes = (2, size, size, channels), {0: "batch"}
        shape = ["batch", size, size, channels]
    else:
        example, axes = (2, 64, 64, channels), {0: "batch", 1: "height", 2: "width"}
        shape = ["batch", "height", "width", channels]
    out.mkdir(parents=True, exist_ok=True)
    written = [out / ONNX_FILE, out / CONFIG_FILE, out / KMEDSSL_CONFIG]
    export_onnx(encoder, written[0], example, axes)
    target_config = {
        "format": "onnx", "graph": "encoder.features",
        "input": {"name": "images", "shape": shape, "dtype": "float32", "layout": "NHWC",
                  "values": "images in [0, 1]; the graph normalises them as (x - input_mean) / input_std",
                  "input_mean": config["input_mean"], "input_std": config["input_std"]},
        "output": {"name": "features", "shape": ["batch", encoder.dim], "dtype": "float32"},
    }
    written[1].write_text(json.dumps(target_config, indent=2) + "\n")
    written[2].write_text(json.dumps(own, indent=2) + "\n")
    return written


def _target_config(kind, to, config):
    if to == "monai":
        return vit_config_to_monai(config) if kind == "vit" else resnet_config_to_monai(config)
    if kind == "vit":
        return vit_config_to_transformers(config) if to == "transformers" else vit_config_to_timm(config)
    if to == "transformers":
        return resnet_config_to_transformers(config)
    block, depths = resnet_architecture(config)
    return {"architecture": TORCHVISION_RESNETS.get((block, tuple(depths))), "block": block, "layers": depths,
            "in_channels": config["channels"], "stem": config["stem"],
            "width": config["width"], "num_classes": 0, "mean": [config["input_mean"]] * config["channels"],
            "std": [config["input_std"]] * config["channels"],
            "note": "stem 'cifar' = conv1 3x3 stride 1 padding 1 and maxpool = Identity; fc not included"}


def _jsonable(config):
    return {k: v for k, v in config.items() if isinstance(v, (int, float, str, bool, type(None), list))}
