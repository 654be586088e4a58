"""ACE grid-aligned two-crop views (paper 004 §3.1; SPEC §3.5): geometry read back from the crops' pixels."""

import numpy as np
import pytest

from kmedssl.views.ace import ACEViews

G, CELLS, CELL_PX = 4, 10, 4  # token grid, source grid, pixels per cell -> source 40 px, crops 16 px
pytestmark = pytest.mark.backend_free


def coordinate_images(cells=CELLS, cell_px=CELL_PX):
    """Source images whose pixels hold their own cell row / cell column."""
    rows = np.repeat(np.arange(cells, dtype=np.float32), cell_px)
    return np.repeat(rows[:, None], cells * cell_px, axis=1), np.repeat(rows[None, :], cells * cell_px, axis=0)


def token_means(crop, grid=G):
    """Mean of each token's pixels, row-major (g^2,)."""
    s = crop.shape[0] // grid
    return crop[..., 0].reshape(grid, s, grid, s).mean(axis=(1, 3)).reshape(-1)


def read_geometry(views, seed):
    """Per-token source cells, recovered from crops of the coordinate images alone.

    C2 token t is one cell ``cells_2[t]``; C1 token t covers the 2 x 2 cells from ``cells_1[t]``
    (its mean coordinate is the top-left cell + 0.5)."""
    image_y, image_x = coordinate_images()
    out_y = views(image_y, np.random.default_rng(seed))
    out_x = views(image_x, np.random.default_rng(seed))
    cells_1 = np.stack([token_means(out_y["crop_1"]) - 0.5, token_means(out_x["crop_1"]) - 0.5], axis=1)
    cells_2 = np.stack([token_means(out_y["crop_2"]), token_means(out_x["crop_2"])], axis=1)
    return np.rint(cells_1).astype(int), np.rint(cells_2).astype(int), out_y


@pytest.mark.parametrize("seed", range(12))
def test_masks_match_the_cells_actually_shared(seed):
    views = ACEViews(grid=G, image_cells=CELLS)
    cells_1, cells_2, out = read_geometry(views, seed)
    covered_1 = {(y + i, x + j) for y, x in cells_1 for i in range(2) for j in range(2)}
    covered_2 = {tuple(c) for c in cells_2}
    expected_1 = [all((y + i, x + j) in covered_2 for i in range(2) for j in range(2)) for y, x in cells_1]
    expected_2 = [tuple(c) in covered_1 for c in cells_2]
    np.testing.assert_array_equal(out["mask_1"], np.asarray(expected_1, np.float32))
    np.testing.assert_array_equal(out["mask_2"], np.asarray(expected_2, np.float32))
    # Whole C1 tokens: every C2 cell shared with C1 belongs to a C1 overlap token.
    shared_by_tokens = {(y + i, x + j) for (y, x), m in zip(cells_1, out["mask_1"]) if m
                        for i in range(2) for j in range(2)}
    assert shared_by_tokens == covered_1 & covered_2
    assert out["mask_1"].sum() >= 1 and out["mask_2"].sum() == 4 * out["mask_1"].sum()


@pytest.mark.parametrize("seed", range(12))
def test_pairs_match_the_same_cells(seed):
    """Each overlap teacher row is paired with the student column that covers exactly its image cells; rows
    outside the overlap are unpaired (-1)."""
    views = ACEViews(grid=G, image_cells=CELLS)
    cells_1, cells_2, out = read_geometry(views, seed)
    paired_comp, paired_decomp = out["paired_comp"], out["paired_decomp"]
    composed = cells_2.reshape(G // 2, 2, G // 2, 2, 2)[:, 0, :, 0].reshape(-1, 2)  # top-left cell per block
    for t in range(G * G):
        if out["mask_1"][t]:
            np.testing.assert_array_equal(composed[paired_comp[t]], cells_1[t])
        else:
            assert paired_comp[t] == -1
        if out["mask_2"][t]:
            i, j = divmod(int(paired_decomp[t]), 2 * G)
            np.testing.assert_array_equal(cells_1[(i // 2) * G + j // 2] + (i % 2, j % 2), cells_2[t])
        else:
            assert paired_decomp[t] == -1
    # Each student column is paired at most once.
    for paired in (paired_comp, paired_decomp):
        used = paired[paired >= 0]
        assert len(set(used.tolist())) == len(used)


def test_crops_are_source_pixels_and_area_resize(rng):
    views = ACEViews(grid=G, image_cells=CELLS)
    cells_1, cells_2, _ = read_geometry(views, seed=3)
    image = rng.normal(size=(CELLS * CELL_PX, CELLS * CELL_PX)).astype(np.float32)
    out = views(image, np.random.default_rng(3))
    y2, x2 = cells_2[0] * CELL_PX
    s = G * CELL_PX
    np.testing.assert_array_equal(out["crop_2"][..., 0], image[y2:y2 + s, x2:x2 + s])
    y1, x1 = cells_1[0] * CELL_PX
    block = image[y1:y1 + 2 * s, x1:x1 + 2 * s].astype(np.float64)
    expected = 0.25 * (block[0::2, 0::2] + block[1::2, 0::2] + block[0::2, 1::2] + block[1::2, 1::2])
    np.testing.assert_allclose(out["crop_1"][..., 0], expected, rtol=1e-6, atol=1e-6)


def test_output_shapes_dtypes_and_reproducibility():
    views = ACEViews(grid=8, image_cells=20)  # the phantom recipe's grid and cells, with 8 px tokens: 160 px source
    image = np.random.default_rng(0).uniform(size=(160, 160)).astype(np.float32)
    out = views(image, np.random.default_rng(7))
    shapes = {"crop_1": (64, 64, 1), "crop_2": (64, 64, 1), "mask_1": (64,), "mask_2": (64,),
              "paired_comp": (64,), "paired_decomp": (64,)}
    assert {k: v.shape for k, v in out.items()} == shapes
    assert all(out[k].dtype == np.float32 for k in ("crop_1", "crop_2", "mask_1", "mask_2"))
    assert out["paired_comp"].dtype == out["paired_decomp"].dtype == np.int32
    assert out["paired_comp"].max() < 16 and out["paired_decomp"].max() < 256
    again = views(image, np.random.default_rng(7))
    for key in shapes:
        np.testing.assert_array_equal(out[key], again[key])


def test_overlap_is_never_empty_and_positions_vary():
    views = ACEViews(grid=G, image_cells=CELLS)
    rng = np.random.default_rng(0)
    corners, inside, partial = set(), 0, 0
    for _ in range(300):
        (c_1, c_2) = views.sample_corners(rng)
        mask_1, mask_2 = views.overlap_masks(c_1, c_2)
        assert mask_1.sum() >= 1 and mask_2.sum() == 4 * mask_1.sum()
        assert all((u_2 - u_1) % 2 == 0 for u_1, u_2 in zip(c_1, c_2))
        assert all(0 <= u <= CELLS - 2 * G for u in c_1) and all(0 <= u <= CELLS - G for u in c_2)
        corners.add((c_1, c_2))
        inside += mask_2.sum() == G * G
        partial += mask_2.sum() < G * G
    assert len(corners) > 50 and inside > 0 and partial > 0


def test_validates_arguments():
    with pytest.raises(ValueError, match="even grid"):
        ACEViews(grid=5)
    with pytest.raises(ValueError, match="image_cells"):
        ACEViews(grid=8, image_cells=15)
    with pytest.raises(ValueError, match="square"):
        ACEViews(grid=G, image_cells=CELLS)(np.zeros((40, 41), np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="multiple of image_cells"):
        ACEViews(grid=G, image_cells=CELLS)(np.zeros((42, 42), np.float32), np.random.default_rng(0))
