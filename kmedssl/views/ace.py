"""ACE views: two grid-aligned crops of one image and their matching pairs (paper 004 §3.1; SPEC §3.5).

NumPy only, one sample per call (the data pipeline's per-sample view builder):

- ``ACEViews``: crops C1 and C2, their overlap masks and matching pairs;
- ``ace_matching_pairs``: the student column paired with each teacher row, from two overlap masks;
- ``ace_matching_targets``: the dense Gaussian targets those pairs define (SPEC §3.5's definition; training
  stamps them on the device from the pairs, ``kmedssl.losses.ace_matching_loss_from_pairs``).
"""

import numpy as np


# === Views ===


class ACEViews:
    """Grid-wise two-crop view builder of ACE, NumPy only (one sample per call).

    The source image is a G x G grid of square cells of ``cell_px = H / G`` pixels. Crop C1 covers
    2g x 2g cells and crop C2 covers g x g cells; C1 is area-resized by 2 (mean of 2 x 2 pixels), so both
    crops are ``S = g * cell_px`` pixels and give a g x g token grid with a ViT of patch size ``cell_px``.
    Corners are drawn in whole cells with an even offset between them, so the overlap is whole C1 tokens
    (2 x 2 C2 tokens each); C2's corner is drawn among the positions that overlap C1, so the overlap is
    never empty.

    Input: ``image`` ``(H, W)`` float32 with ``H = W = image_cells * cell_px``; ``rng`` a
    ``numpy.random.Generator`` (the only source of randomness).

    Output: a dict of arrays
        ``crop_1`` ``(S, S, 1)`` (C1) and ``crop_2`` ``(S, S, 1)`` (C2), float32;
        ``mask_1`` ``(g^2,)`` and ``mask_2`` ``(g^2,)`` float32 0/1 overlap masks of each crop's tokens
        (row-major);
        ``paired_comp`` ``(g^2,)`` and ``paired_decomp`` ``(g^2,)`` int32 from ``ace_matching_pairs``: per
        teacher row (C1 tokens, C2 tokens), its composed column on the g/2 x g/2 grid / decomposed column on
        the 2g x 2g grid, -1 outside the overlap. The model stamps the Gaussian targets of Eq. 4 from them
        (``kmedssl.losses.ace_matching_loss_from_pairs``), so no dense ``(g^2, 4 g^2)`` target is built here.

    Args:
        grid: g, tokens per side of each crop (even; paper 14).
        image_cells: G, cells per side of the source image (>= 2g; paper 32).
    """

    def __init__(self, grid=14, image_cells=32):
        if not (isinstance(grid, (int, np.integer)) and grid >= 2 and grid % 2 == 0):
            raise ValueError(f"Expected an even grid >= 2. Received: grid={grid}")
        if not (isinstance(image_cells, (int, np.integer)) and image_cells >= 2 * grid):
            raise ValueError(
                f"Expected an integer image_cells >= 2 * grid = {2 * grid}. Received: image_cells={image_cells}"
            )
        self.grid = int(grid)
        self.image_cells = int(image_cells)

    def __call__(self, image, rng):
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2 or image.shape[0] != image.shape[1] or image.shape[0] % self.image_cells:
            raise ValueError(
                f"Expected a square (H, W) image with H a multiple of image_cells={self.image_cells}. "
                f"Received: image.shape={image.shape}"
            )
        cell = image.shape[0] // self.image_cells
        g = self.grid
        size = g * cell  # S
        (y_1, x_1), (y_2, x_2) = self.sample_corners(rng)
        crop_1 = image[y_1 * cell:(y_1 + 2 * g) * cell, x_1 * cell:(x_1 + 2 * g) * cell]  # (2S, 2S)
        crop_1 = crop_1.reshape(size, 2, size, 2).mean(axis=(1, 3))  # (S, S), area resize
        crop_2 = image[y_2 * cell:(y_2 + g) * cell, x_2 * cell:(x_2 + g) * cell]  # (S, S)
        mask_1, mask_2 = self.overlap_masks((y_1, x_1), (y_2, x_2))
        paired_comp, paired_decomp = ace_matching_pairs(mask_1, mask_2, grid=g)
        return {
            "crop_1": crop_1[..., None],
            "crop_2": np.ascontiguousarray(crop_2)[..., None],
            "mask_1": mask_1,
            "mask_2": mask_2,
            "paired_comp": paired_comp,
            "paired_decomp": paired_decomp,
        }

    def sample_corners(self, rng):
        """Top-left cells ``((y_1, x_1), (y_2, x_2))`` of C1 and C2 on the G x G grid.

        Per axis: ``u_1`` uniform in [0, G - 2g]; ``u_2`` uniform among the positions in [0, G - g] with
        ``u_2 - u_1`` even and ``u_1 - g < u_2 < u_1 + 2g`` (the crops overlap; ``u_2 = u_1`` always
        qualifies).
        """
        g, cells = self.grid, self.image_cells
        corner_1, corner_2 = [], []
        for _ in range(2):
            u_1 = int(rng.integers(0, cells - 2 * g + 1))
            low, high = max(0, u_1 - g + 1), min(cells - g, u_1 + 2 * g - 1)
            candidates = [u for u in range(low, high + 1) if (u - u_1) % 2 == 0]
            corner_1.append(u_1)
            corner_2.append(int(candidates[rng.integers(0, len(candidates))]))
        return tuple(corner_1), tuple(corner_2)

    def overlap_masks(self, corner_1, corner_2):
        """Row-major ``(g^2,)`` float32 masks of the C1 tokens (2 x 2 cells each) and C2 tokens (one cell
        each) that lie inside the other crop."""
        g = self.grid
        steps = np.arange(g)
        inside_1, inside_2 = [], []
        for u_1, u_2 in zip(corner_1, corner_2):
            start_1 = u_1 + 2 * steps  # first cell of each C1 token along this axis
            inside_1.append((start_1 >= u_2) & (start_1 + 2 <= u_2 + g))
            start_2 = u_2 + steps
            inside_2.append((start_2 >= u_1) & (start_2 < u_1 + 2 * g))
        mask_1 = np.outer(inside_1[0], inside_1[1]).reshape(-1).astype(np.float32)
        mask_2 = np.outer(inside_2[0], inside_2[1]).reshape(-1).astype(np.float32)
        return mask_1, mask_2


# === Matching pairs and targets ===

def ace_matching_pairs(mask_1, mask_2, grid=14):
    """The student column paired with each teacher row, for composition and decomposition (SPEC §3.5).

    Pairs, in row-major order:
    - composition: the i-th overlap token of C1 (teacher row) with the i-th cell of the 2 x 2-max-pooled C2
      mask on the g/2 x g/2 grid (composed student column);
    - decomposition: the i-th overlap token of C2 (teacher row) with the i-th cell of the nearest-upsampled
      C1 mask on the 2g x 2g grid (decomposed student column).

    These indices are all the matching targets need: ``ace_matching_loss_from_pairs`` (or the fused kernel)
    stamps the Gaussians of Eq. 4 on the device, and ``ace_matching_targets`` builds the dense matrices.

    Args:
        mask_1: ``(g^2,)`` 0/1 (or bool) overlap mask of C1's token grid, row-major.
        mask_2: ``(g^2,)`` 0/1 (or bool) overlap mask of C2's token grid, row-major.
        grid: g, the token grid side of each crop (even; paper 14).

    Returns:
        ``(paired_comp, paired_decomp)``: int32 arrays of shape ``(g^2,)``; entry i is the row-major column
        (in ``[0, g^2 / 4)`` and ``[0, 4 g^2)``) paired with teacher row i, or -1 outside the overlap.

    Raises:
        ValueError: on bad arguments, or masks whose overlaps are not whole C1 tokens of equal area.
    """
    if not (isinstance(grid, (int, np.integer)) and grid >= 2 and grid % 2 == 0):
        raise ValueError(f"Expected an even grid >= 2. Received: grid={grid}")
    m_1 = _as_grid_mask(mask_1, grid, "mask_1")  # (g, g)
    m_2 = _as_grid_mask(mask_2, grid, "mask_2")  # (g, g)
    pooled_2 = m_2.reshape(grid // 2, 2, grid // 2, 2).max(axis=(1, 3))  # (g/2, g/2)
    upsampled_1 = m_1.repeat(2, axis=0).repeat(2, axis=1)  # (2g, 2g)
    if not (np.array_equal(m_2, pooled_2.repeat(2, axis=0).repeat(2, axis=1))
            and pooled_2.sum() == m_1.sum()):
        raise ValueError(
            "Expected overlap masks made of whole C1 tokens (each C1 overlap token covering a 2 x 2 block of "
            f"C2 overlap tokens). Received: mask_1 with {int(m_1.sum())} overlap tokens, mask_2 with "
            f"{int(m_2.sum())} overlap tokens ({int(pooled_2.sum())} whole 2 x 2 blocks)"
        )
    paired_comp = np.full(grid * grid, -1, dtype=np.int32)
    paired_comp[np.flatnonzero(m_1)] = np.flatnonzero(pooled_2)
    paired_decomp = np.full(grid * grid, -1, dtype=np.int32)
    paired_decomp[np.flatnonzero(m_2)] = np.flatnonzero(upsampled_1)
    return paired_comp, paired_decomp


def ace_matching_targets(mask_1, mask_2, grid=14, comp_kernel=3, decomp_kernel=3, sigma=1.0):
    """Dense Gaussian-smoothed matching targets of composition and decomposition (paper 004, Eq. 4).

    Each row paired by ``ace_matching_pairs`` gets a kernel x kernel Gaussian centred on its paired cell

        T[i, (y + dy) * G + (x + dx)] = exp(-(dx^2 + dy^2) / (2 sigma^2)),  |dx|, |dy| <= (kernel - 1) / 2,

    with peak 1 at the paired cell, clipped at the border of the G x G column grid. Rows of tokens outside
    the overlap are zero. (Training uses the pairs directly, see ``ace_matching_loss_from_pairs``.)

    Args:
        mask_1: ``(g^2,)`` 0/1 (or bool) overlap mask of C1's token grid, row-major.
        mask_2: ``(g^2,)`` 0/1 (or bool) overlap mask of C2's token grid, row-major.
        grid: g, the token grid side of each crop (even; paper 14).
        comp_kernel: odd Gaussian kernel size of composition (paper 3).
        decomp_kernel: odd Gaussian kernel size of decomposition (paper 3; the authors' code uses 5).
        sigma: Gaussian width in grid cells (paper 1).

    Returns:
        ``(T_comp, T_decomp)``: float32 arrays of shapes ``(g^2, g^2 / 4)`` (rows: teacher C1 tokens,
        columns: composed student C2 tokens) and ``(g^2, 4 g^2)`` (rows: teacher C2 tokens, columns:
        decomposed student C1 tokens).

    Raises:
        ValueError: on bad arguments, or masks whose overlaps are not whole C1 tokens of equal area.
    """
    validate_kernel(comp_kernel=comp_kernel, decomp_kernel=decomp_kernel)
    if not sigma > 0:
        raise ValueError(f"Expected sigma > 0. Received: sigma={sigma}")
    paired_comp, paired_decomp = ace_matching_pairs(mask_1, mask_2, grid=grid)
    return (_stamp_gaussians(paired_comp, grid // 2, comp_kernel, sigma),  # (g^2, g^2/4)
            _stamp_gaussians(paired_decomp, 2 * grid, decomp_kernel, sigma))  # (g^2, 4g^2)


def validate_kernel(**kernels):
    """Raise ValueError unless every keyword value is an odd positive integer."""
    for name, value in kernels.items():
        if not (isinstance(value, (int, np.integer)) and value >= 1 and value % 2 == 1):
            raise ValueError(f"Expected an odd positive integer {name}. Received: {name}={value}")


def _as_grid_mask(mask, grid, name):
    mask = np.asarray(mask)
    if mask.shape != (grid * grid,):
        raise ValueError(f"Expected {name} of shape ({grid * grid},). Received: {name}.shape={mask.shape}")
    if not np.isin(mask, (0, 1)).all():
        raise ValueError(f"Expected {name} to hold only 0 and 1. Received: values {np.unique(mask)[:5]}")
    return mask.astype(bool).reshape(grid, grid)


def _stamp_gaussians(paired, side, kernel, sigma):
    """``(N_t,)`` pairs -> ``(N_t, side^2)``: row i gets a Gaussian of peak 1 centred on cell ``paired[i]``."""
    target = np.zeros((len(paired), side * side), dtype=np.float32)
    rows = np.flatnonzero(paired >= 0)
    cell_y, cell_x = np.divmod(paired[rows], side)
    radius = (kernel - 1) // 2
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            y, x = cell_y + dy, cell_x + dx
            inside = (y >= 0) & (y < side) & (x >= 0) & (x < side)
            target[rows[inside], y[inside] * side + x[inside]] = np.exp(-(dx * dx + dy * dy) / (2 * sigma**2))
    return target
