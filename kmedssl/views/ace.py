"""ACE views: two grid-aligned crops of one image and their matching pairs (paper 004 §3.1; SPEC §3.5)."""

import numpy as np

from kmedssl.losses.ace import ace_matching_pairs


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
