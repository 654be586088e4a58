"""PyTorch ``.pth`` / ``.pt`` files, read by torch's own reader in its weights-only mode (never unpickled):
the one place outside the backends' dispatch that imports torch for reading files (SPEC §1)."""


def load_weights_only(path):
    """The object stored in the PyTorch file ``path``: ``torch.load(path, weights_only=True, map_location="cpu")``,
    which admits tensors, containers and numbers only.

    Raises:
        ImportError: torch is not installed.
        Exception: torch's own error for a file that is not a weights-only PyTorch file.
    """
    import torch

    return torch.load(path, weights_only=True, map_location="cpu")


def numpy_tensors(state):
    """``{name: NumPy array}`` of the ``torch.Tensor`` values of the dict ``state`` (bfloat16 as float32; other
    values left out)."""
    import torch

    out = {}
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            out[str(name)] = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    return out
