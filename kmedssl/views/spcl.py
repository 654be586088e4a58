"""S-PCL views: two disjoint visible-token parts of one image (paper 003 §2.2; SPEC §3.4)."""

from keras import ops

from kmedssl.distributed import replica_uniform
from kmedssl.ops import random_partition


def partition_tokens(batch_size, num_patches, mask_ratio, seed_generator):
    """Draw uniform noise (B, N) and split each row's patches with ``kmedssl.ops.random_partition``.

    Returns:
        ``(part_1, part_2)``: int32 patch indices, each sorted ascending, of shapes (B, V // 2) and
        (B, V - V // 2) with V = N - int(N * mask_ratio).
    """
    noise = replica_uniform((batch_size, num_patches), seed=seed_generator)  # this replica's rows of one global draw
    _, part_1, part_2 = random_partition(noise, mask_ratio)
    return ops.cast(part_1, "int32"), ops.cast(part_2, "int32")
