"""Backend-agnostic ops of kmedssl (API: ``kmedssl.ops``).

Each op has one ``keras.ops`` reference implementation, used on every backend and device.
"""

from kmedssl.ops.masking import mae_masking, random_partition

__all__ = ["mae_masking", "random_partition"]
