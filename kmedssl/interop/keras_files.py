"""``.keras`` archives read as data: ``config.json`` with ``json`` and ``model.weights.h5`` with ``h5py``, so a
KerasHub backbone's weights are read without importing KerasHub or deserialising any object (safe mode by
construction; nothing is unpickled).

A Keras 3 ``.keras`` file is a zip holding ``config.json`` (the model's class and ``get_config()``),
``metadata.json`` and ``model.weights.h5``. In the HDF5 file every layer with state is a group with a ``vars``
subgroup whose attribute ``name`` is the layer's name and whose datasets ``0``, ``1``, ... are its variables in
creation order; the groups themselves are named after the Python attributes and snake-cased classes that hold
the layers (``layers/vi_t_encoder/encoder_layers/vi_t_encoder_block_1/mha/query_dense``), with counters that
depend on the layer order. ``read_weights`` keys each variable by its layers' *names* instead
(``vit_encoder/transformer_block_2/mha/query/0``), which do not depend on that order.

Supported KerasHub backbones (layouts of keras-hub 0.32.0 saved by Keras 3.15): ``keras_hub.models.ViTBackbone``
and ``keras_hub.models.ResNetBackbone`` (``block_type="basic_block"``, ResNet-18 v1 with the 7x7 stem).
"""

import json
import pathlib
import tempfile
import zipfile

import numpy as np

from kmedssl.interop.state_dicts import InteropError

CONFIG_MEMBER = "config.json"
WEIGHTS_MEMBER = "model.weights.h5"
MAX_CONFIG_BYTES = 64 * 2**20
KERAS_HUB_CLASSES = ("ViTBackbone", "ResNetBackbone")
# ResNetBackbone arguments that kmedssl's ResNet-18 (stem="imagenet") needs; the widths follow from the weights.
KERAS_HUB_RESNET18 = {"block_type": "basic_block", "use_pre_activation": False, "input_conv_kernel_sizes": [7],
                      "stackwise_num_blocks": [2, 2, 2, 2], "stackwise_num_strides": [1, 2, 2, 2]}


def read_config(path):
    """The ``config.json`` dict of a ``.keras`` archive (``class_name``, ``registered_name``, ``config`` ...).

    Raises:
        InteropError: not a zip, no ``config.json``, or not a JSON object (one line naming ``path``).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            info = _member(archive, CONFIG_MEMBER, path)
            if info.file_size > MAX_CONFIG_BYTES:
                raise InteropError(f"{path}: {CONFIG_MEMBER} of {info.file_size} bytes is not a model config")
            text = archive.read(info)
    except zipfile.BadZipFile:
        raise InteropError(f"{path}: not a .keras file (not a zip archive)") from None
    try:
        config = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InteropError(f"{path}: {CONFIG_MEMBER} is not JSON ({error})") from None
    if not isinstance(config, dict):
        raise InteropError(f"{path}: {CONFIG_MEMBER} is not a JSON object")
    return config


def keras_hub_class(config):
    """``"ViTBackbone"`` ... for a KerasHub model's ``config.json``, None for anything else."""
    registered = str(config.get("registered_name") or "")
    module = str(config.get("module") or "")
    if registered.startswith("keras_hub>") or module.startswith("keras_hub."):
        return str(config.get("class_name"))
    return None


def read_weights(path):
    """``{layer names/index: np.ndarray}`` of the ``model.weights.h5`` in a ``.keras`` archive (see the module
    docstring); numeric datasets only.

    Raises:
        InteropError: no weights member, not HDF5, two layers of one name, or a non-numeric variable.
    """
    import h5py  # a dependency of Keras 3

    try:
        with zipfile.ZipFile(path) as archive, tempfile.TemporaryDirectory() as folder:
            info = _member(archive, WEIGHTS_MEMBER, path)
            weights = pathlib.Path(archive.extract(info, folder))
            try:
                with h5py.File(weights, "r") as file:
                    state = {}
                    _walk(file, "", state, path)
                    return state
            except OSError as error:
                raise InteropError(f"{path}: {WEIGHTS_MEMBER} is not an HDF5 file ({error})") from None
    except zipfile.BadZipFile:
        raise InteropError(f"{path}: not a .keras file (not a zip archive)") from None


def _member(archive, name, path):
    try:
        return archive.getinfo(name)
    except KeyError:
        raise InteropError(f"{path}: a .keras file without {name}") from None


def _hard_link(group, key, path):
    """``group[key]``, refusing soft and external links (an external link would open another file)."""
    import h5py

    if not isinstance(group.get(key, getlink=True), h5py.HardLink):
        raise InteropError(f"{path}: {group.name}/{key} is a link, not data")
    return group[key]


def _walk(group, prefix, state, path):
    import h5py

    for key in group:
        item = _hard_link(group, key, path)
        if not isinstance(item, h5py.Group):
            continue
        if key == "vars":
            for index in item:
                dataset = _hard_link(item, index, path)
                if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind not in "fiub":
                    raise InteropError(f"{path}: variable {item.name}/{index} is not a numeric array")
                name = f"{prefix}/{index}" if prefix else str(index)
                if name in state:
                    raise InteropError(f"{path}: two variables are named {name!r}")
                state[name] = np.asarray(dataset[()])
        elif "vars" in item:  # a layer: continue under its name
            layer = item["vars"].attrs.get("name", key)
            layer = layer.decode("utf-8", "replace") if isinstance(layer, bytes) else str(layer)
            _walk(item, f"{prefix}/{layer}" if prefix else layer, state, path)
        else:  # a container of layers (``layers``, ``encoder_layers``)
            _walk(item, prefix, state, path)


def keras_hub_state(path, config):
    """``{name: np.ndarray}`` of a KerasHub backbone's ``.keras`` file whose ``config.json`` is ``config``, after
    checking the arguments that the weights' shapes do not show.

    Raises:
        InteropError: another KerasHub class, or the first argument kmedssl's encoders cannot express.
    """
    class_name, arguments = keras_hub_class(config), config.get("config") or {}
    if class_name not in KERAS_HUB_CLASSES:
        raise InteropError(f"{path}: a keras_hub {class_name}; kmedssl reads keras_hub "
                           f"{' and '.join(KERAS_HUB_CLASSES)} files")
    if class_name == "ViTBackbone":
        image, patch = list(arguments.get("image_shape") or []), arguments.get("patch_size")
        patch = [patch, patch] if isinstance(patch, int) else list(patch or [])
        channels_first = arguments.get("data_format") == "channels_first"
        height, width = (image[1:3] if channels_first else image[0:2]) if len(image) == 3 else (None, None)
        if not arguments.get("use_class_token", True):
            raise InteropError(f"{path}: keras_hub ViTBackbone with use_class_token=False: kmedssl's ViT has a CLS "
                               f"token")
        if len(patch) != 2 or patch[0] != patch[1]:
            raise InteropError(f"{path}: keras_hub ViTBackbone with patch_size={patch}: kmedssl's patches are square")
        if height is None or height != width:
            raise InteropError(f"{path}: keras_hub ViTBackbone with image_shape={image}: kmedssl's images are square")
    else:
        for key, expected in KERAS_HUB_RESNET18.items():
            if arguments.get(key, expected) != expected:
                raise InteropError(f"{path}: keras_hub ResNetBackbone with {key}={arguments.get(key)!r}: kmedssl's "
                                   f"ResNet-18 needs {key}={expected!r}")
    return read_weights(path)
