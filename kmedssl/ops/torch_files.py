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
