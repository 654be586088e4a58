"""ONNX export of a model's method through the backend's own exporter (backend-aware, like ``runtime.py``).

Only the torch backend has an ONNX exporter that ships with it: ``torch.onnx.export(dynamo=True)`` (needs the
``onnx`` and ``onnxscript`` packages). Its TorchScript exporter (``dynamo=False``, which needs ``onnx`` only)
cannot export Keras's torch LayerNormalization (``F.layer_norm`` is given a traced, non-constant
``normalized_shape``), and Keras's own ``model.export(format="onnx")`` takes that path whenever the batch is
dynamic; on TensorFlow and JAX Keras needs ``tf2onnx`` / ``jax2onnx`` instead. So kmedssl exports on torch only.
"""

import importlib.util
import logging
import warnings

import keras

ONNX_PACKAGES = ("onnx", "onnxscript")


def onnx_export_error():
    """Why an ONNX export cannot run in this process (one line), or None when it can."""
    backend = keras.backend.backend()
    if backend != "torch":
        return (f"ONNX export needs KERAS_BACKEND=torch (torch.onnx.export); this process runs {backend}: rerun "
                f"with --backend torch")
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        return f"ONNX export needs the packages {', '.join(missing)} (pip install {' '.join(ONNX_PACKAGES)})"
    return None


def export_onnx(model, path, example_shape, dynamic_axes, method="features", input_name="images",
                output_name="features"):
    """Write ``model.<method>(x)`` for one float32 input ``x`` as an ONNX graph at ``path`` (torch backend).

    Args:
        model: a built Keras model (on torch, a ``torch.nn.Module`` whose weights become the graph's
            initialisers).
        path: the ``.onnx`` file to write.
        example_shape: shape of the example input the graph is traced with.
        dynamic_axes: ``{axis: name}`` of the input axes left symbolic (e.g. ``{0: "batch"}``); the example
            must have at least 2 along each (torch specialises sizes 0 and 1).
        method: the model's method to export (called with ``training=False``).
        input_name, output_name: names of the graph's input and output.

    Raises:
        RuntimeError: the backend or packages cannot export (``onnx_export_error``'s line).
    """
    error = onnx_export_error()
    if error:
        raise RuntimeError(error)
    import torch

    class Method(torch.nn.Module):  # registers the model as a sub-module: its weights become initialisers
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, images):
            return getattr(self.model, method)(images, training=False)

    wrapper = Method()
    was_training = model.training
    wrapper.eval()
    dims = {axis: torch.export.Dim(name, min=2) for axis, name in dynamic_axes.items()}
    example = torch.rand(*example_shape, dtype=torch.float32, device=next(iter(model.parameters())).device)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" ...
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapper, (example,), dynamo=True, input_names=[input_name],
                                        output_names=[output_name], dynamic_shapes={"images": dims},
                                        verbose=False)
        program.save(str(path))
    finally:
        exporter_log.setLevel(level)
        model.train(was_training)
    return path
