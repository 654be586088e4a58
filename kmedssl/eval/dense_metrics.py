"""Metrics of the dense tasks (SPEC §5; ACE 004 §5.2, §A.1, §B.2): Dice, heatmap landmarks, zero-shot
correspondence, and bootstrap intervals of their means. NumPy only (no Keras).

Conventions (docs/evaluation.md, "Dense tasks (building blocks)"):

- **Dice** of a predicted mask ``P`` and a true mask ``T`` of one image and one structure:
  ``D = 2 |P ∩ T| / (|P| + |T|)``, and ``D = 1`` when both are empty (the SIIM-ACR pneumothorax challenge's
  rule). An empty truth with a non-empty prediction scores 0 (and a non-empty truth with an empty prediction
  0), as the formula gives. The **mean Dice** averages the per-image Dice over *all* test images, positive and
  negative alike (SIIM's metric, which ACE §A.1 reports as "the mean Dice which average the dice of
  pneumothorax non-pneumothorax images").
- **Heatmap targets** (ACE §B.2, following HRNet [45]): a Gaussian ``exp(-(dx² + dy²) / (2 σ²))`` in an
  ``11 x 11`` window centred on the landmark's pixel, peak exactly 1, 0 outside the window. ACE does not state
  σ; HRNet's window is ``2 · 3σ + 1`` pixels wide (it reaches ±3σ), so an 11-pixel window means
  ``σ = (11 - 1) / 6 = 5/3`` (the default). The centre is the landmark rounded to the nearest pixel (HRNet's
  ``int(x + 0.5)``), so the peak value 1 sits on a pixel.
- **Heatmap decoding**: the arg-max pixel ``(x, y) = (column, row)``, the first maximum in row-major order on
  ties, with no sub-pixel refinement by default. ``refine=True`` moves it a quarter pixel towards the higher
  neighbour along each axis (HRNet's ``get_final_preds``). Landmark error: the Euclidean distance in pixels.
- **Zero-shot correspondence** (ACE §5.2): the query landmark's feature is the embedding of the query patch
  that contains it; the prediction is the centre of the key patch whose embedding is nearest in L2 (the first
  on ties); the error is its Euclidean distance in pixels to the key image's landmark. ACE slides a window
  with stride 8 over the key image; with a ViT's patch tokens the key grid has the patch size as stride.

Pixel coordinates: ``x`` is the column and ``y`` the row, pixel centres at integers (the image spans
``-0.5 .. size - 0.5``), as the phantom's landmarks (docs/data-phantom-dense.md).
"""

import math

import numpy as np

from kmedssl.eval.intervals import (
    CONFIDENCE,
    N_RESAMPLES,
    _check_confidence,
    _check_resamples,
    _group_counts,
    _group_index,
    _interval,
)

HEATMAP_KERNEL = 11


# === Dice ===


def dice_per_image(predictions, targets):
    """Dice of every image (and structure), 1 where prediction and truth are both empty.

    Args:
        predictions, targets: boolean (or 0/1) masks of the same shape ``(N, H, W)`` or ``(N, H, W, K)``
            (``K`` structures).

    Returns:
        float64 ``(N,)`` or ``(N, K)``: ``2 |P ∩ T| / (|P| + |T|)``, 1 when ``|P| + |T| = 0``.
    """
    predictions, targets = np.asarray(predictions), np.asarray(targets)
    if predictions.shape != targets.shape or predictions.ndim not in (3, 4):
        raise ValueError(f"Expected predictions and targets of one shape (N, H, W) or (N, H, W, K). Received: "
                         f"predictions.shape={predictions.shape}, targets.shape={targets.shape}")
    p, t = predictions.astype(bool), targets.astype(bool)
    intersection = np.sum(p & t, axis=(1, 2), dtype=np.int64)
    total = np.sum(p, axis=(1, 2), dtype=np.int64) + np.sum(t, axis=(1, 2), dtype=np.int64)
    return np.where(total > 0, 2.0 * intersection / np.maximum(total, 1), 1.0)


def mean_dice(predictions, targets, structure_names=None):
    """Mean Dice over images (positive and negative alike, SIIM / ACE §A.1), per structure and their mean.

    Args:
        predictions, targets: as :func:`dice_per_image`.
        structure_names: names of the ``K`` structures of ``(N, H, W, K)`` masks (default ``"0" .. "K-1"``);
            a single ``(N, H, W)`` structure is named ``"0"`` unless one name is given.

    Returns:
        ``{"per_structure": {name: mean Dice}, "mean": mean over structures}``.
    """
    scores = dice_per_image(predictions, targets)
    scores = scores[:, None] if scores.ndim == 1 else scores
    names = [str(k) for k in range(scores.shape[1])] if structure_names is None else list(structure_names)
    if len(names) != scores.shape[1]:
        raise ValueError(f"Expected {scores.shape[1]} structure names. Received: {len(names)}")
    per_structure = {name: float(np.mean(scores[:, k])) for k, name in enumerate(names)}
    return {"per_structure": per_structure, "mean": float(np.mean(list(per_structure.values())))}


# === Heatmaps ===


def default_sigma(kernel=HEATMAP_KERNEL):
    """``(kernel - 1) / 6``: the σ whose ±3σ fills the window (HRNet's ``size = 2 · 3σ + 1``); 5/3 for 11."""
    return (kernel - 1) / 6.0


def gaussian_heatmap(points, size, kernel=HEATMAP_KERNEL, sigma=None, visible=None):
    """Heatmap targets of landmarks: an unnormalised Gaussian of peak 1 in a ``kernel x kernel`` window.

    ``h_k(u, v) = exp(-((u - cx_k)² + (v - cy_k)²) / (2 σ²))`` for ``|u - cx_k|, |v - cy_k| <= kernel // 2``,
    0 elsewhere, with ``(cx_k, cy_k)`` the landmark rounded half up to a pixel (column, row). A landmark whose
    rounded pixel lies outside the image, or that is not ``visible``, gets an all-zero map.

    Args:
        points: ``(K, 2)`` landmarks ``(x, y)`` in pixels (x = column, y = row, pixel centres at integers).
        size: ``H`` (square) or ``(H, W)``.
        kernel: odd window side (11, ACE §B.2).
        sigma: Gaussian σ in pixels; default :func:`default_sigma` (5/3 for 11).
        visible: optional ``(K,)`` booleans.

    Returns:
        float32 ``(K, H, W)``.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    height, width = (size, size) if np.isscalar(size) else tuple(size)
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"Expected an odd positive kernel. Received: kernel={kernel}")
    sigma = default_sigma(kernel) if sigma is None else float(sigma)
    if not sigma > 0:
        raise ValueError(f"Expected sigma > 0. Received: sigma={sigma}")
    visible = np.ones(len(points), bool) if visible is None else np.asarray(visible, bool)
    centres = np.floor(points + 0.5)  # (K, 2) rounded half up
    radius = kernel // 2
    cols, rows = np.arange(width)[None, :], np.arange(height)[None, :]
    dx, dy = cols - centres[:, :1], rows - centres[:, 1:]  # (K, W), (K, H)
    gx = np.where(np.abs(dx) <= radius, np.exp(-dx**2 / (2 * sigma**2)), 0.0)
    gy = np.where(np.abs(dy) <= radius, np.exp(-dy**2 / (2 * sigma**2)), 0.0)
    inside = (visible & (centres[:, 0] >= 0) & (centres[:, 0] < width) & (centres[:, 1] >= 0)
              & (centres[:, 1] < height))
    heatmaps = gy[:, :, None] * gx[:, None, :]  # separable: exp(-(dx² + dy²) / 2σ²)
    return (heatmaps * inside[:, None, None]).astype(np.float32)


def heatmap_argmax(heatmaps, refine=False):
    """Decode landmarks from heatmaps: the arg-max pixel ``(x, y)``.

    Args:
        heatmaps: ``(..., H, W)``.
        refine: False (default): the arg-max pixel itself (the first maximum in row-major order).
            True: HRNet's quarter-pixel shift towards the higher of the two neighbours along each axis
            (``+ 0.25 sign(h[x + 1] - h[x - 1])``, none at the border).

    Returns:
        float64 ``(..., 2)`` ``(x, y)`` in pixels.
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float64)
    if heatmaps.ndim < 2:
        raise ValueError(f"Expected heatmaps (..., H, W). Received: shape {heatmaps.shape}")
    height, width = heatmaps.shape[-2:]
    flat = heatmaps.reshape(-1, height * width)
    rows, cols = np.divmod(np.argmax(flat, axis=1), width)
    xy = np.stack([cols, rows], axis=1).astype(np.float64)
    if refine:
        maps = flat.reshape(-1, height, width)
        n = np.arange(len(maps))
        inner_x, inner_y = (cols > 0) & (cols < width - 1), (rows > 0) & (rows < height - 1)
        right = maps[n, rows, np.minimum(cols + 1, width - 1)] - maps[n, rows, np.maximum(cols - 1, 0)]
        down = maps[n, np.minimum(rows + 1, height - 1), cols] - maps[n, np.maximum(rows - 1, 0), cols]
        xy[:, 0] += 0.25 * np.sign(right) * inner_x
        xy[:, 1] += 0.25 * np.sign(down) * inner_y
    return xy.reshape(*heatmaps.shape[:-2], 2)


def landmark_error(predicted, true, visible=None):
    """Euclidean distance in pixels between predicted and true landmarks, NaN where not ``visible``.

    Args:
        predicted, true: ``(..., 2)`` ``(x, y)`` pixels.
        visible: optional booleans of shape ``(...)``.

    Returns:
        float64 ``(...)``.
    """
    predicted, true = np.asarray(predicted, np.float64), np.asarray(true, np.float64)
    if predicted.shape != true.shape or predicted.shape[-1:] != (2,):
        raise ValueError(f"Expected predicted and true points of one shape (..., 2). Received: "
                         f"{predicted.shape} and {true.shape}")
    error = np.linalg.norm(predicted - true, axis=-1)
    return error if visible is None else np.where(np.asarray(visible, bool), error, np.nan)


# === Zero-shot correspondence ===


def patch_index(points, patch_size, grid_size):
    """Row-major index of the patch that contains each point ``(x, y)`` on a ``grid_size``² grid of
    ``patch_size``-pixel patches: column ``floor((x + 0.5) / p)``, row ``floor((y + 0.5) / p)``, clipped to the
    grid. ``(K, 2) -> (K,)`` int64."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    cell = np.clip(np.floor((points + 0.5) / patch_size), 0, grid_size - 1).astype(np.int64)
    return cell[:, 1] * grid_size + cell[:, 0]


def patch_centres(grid_size, patch_size):
    """``(grid_size², 2)`` centre ``(x, y)`` of each row-major patch: ``(c p + (p - 1) / 2, r p + (p - 1) / 2)``."""
    rows, cols = np.divmod(np.arange(grid_size * grid_size), grid_size)
    offset = (patch_size - 1) / 2.0
    return np.stack([cols * patch_size + offset, rows * patch_size + offset], axis=1).astype(np.float64)


def nearest_patch(queries, keys):
    """Index of the nearest key (L2) for every query, the first on ties. ``(N_q, C), (N_k, C) -> (N_q,)``."""
    queries, keys = np.asarray(queries, np.float64), np.asarray(keys, np.float64)
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"Expected queries (N_q, C) and keys (N_k, C). Received: {queries.shape}, {keys.shape}")
    distances = np.sum((queries[:, None, :] - keys[None, :, :]) ** 2, axis=-1)  # (N_q, N_k)
    return np.argmin(distances, axis=1)


def zero_shot_correspondence(query_patches, key_patches, query_points, key_points, patch_size, visible=None):
    """ACE §5.2 with patch tokens: find each query landmark in the key image by its nearest patch embedding.

    Args:
        query_patches, key_patches: ``(g², C)`` row-major patch embeddings of the query and the key image
            (e.g. a ViT's patch tokens without CLS).
        query_points, key_points: ``(K, 2)`` the landmarks ``(x, y)`` in pixels in each image.
        patch_size: patch side in pixels (the grid is ``g x g``).
        visible: optional ``(K,)``: landmarks visible in both images (errors of the others are NaN).

    Returns:
        ``{"predicted": (K, 2) key-image pixels, "error": (K,) pixels, "key_patch": (K,) indices}``.
    """
    query_patches, key_patches = np.asarray(query_patches), np.asarray(key_patches)
    grid_size = math.isqrt(len(key_patches))
    if grid_size**2 != len(key_patches) or query_patches.shape != key_patches.shape:
        raise ValueError(f"Expected query and key patches of one square grid (g², C). Received: "
                         f"{query_patches.shape}, {key_patches.shape}")
    queries = query_patches[patch_index(query_points, patch_size, grid_size)]  # (K, C)
    key_patch = nearest_patch(queries, key_patches)
    predicted = patch_centres(grid_size, patch_size)[key_patch]
    return {"predicted": predicted, "error": landmark_error(predicted, key_points, visible), "key_patch": key_patch}


# === Intervals of a mean over images ===


def _weighted_means(values, groups, n_resamples, seed):
    """Point mean over finite rows and ``(B,)`` means of the cluster-bootstrap resamples (the resamples of
    ``kmedssl.eval.intervals`` with the same ``groups`` and ``seed``)."""
    index, n_groups = _group_index(groups)
    counts = _group_counts(n_groups, _check_resamples(n_resamples), seed)  # (B, G)
    finite = np.isfinite(values)
    weights = counts[:, index] * finite[None, :]  # (B, N): a row's multiplicity is its group's
    total = weights @ np.where(finite, values, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        resampled = total / weights.sum(axis=1)
    point = float(np.mean(values[finite])) if finite.any() else math.nan
    return point, resampled, n_groups


def _rows(name, values, n=None):
    values = np.asarray(values, np.float64)
    if values.ndim != 1 or (n is not None and len(values) != n):
        raise ValueError(f"Expected {name} of shape ({'N' if n is None else n},). Received: {values.shape}")
    return values


def mean_interval(values, groups=None, n_resamples=N_RESAMPLES, seed=0, confidence=CONFIDENCE):
    """Mean of per-image values (Dice, landmark error; NaN rows left out) with its 95 % cluster-bootstrap
    percentile interval over ``groups`` (the test study; each image its own group when None), the same
    resamples as the AUROC intervals with that seed. Returns an ``Interval``."""
    values = _rows("values", values)
    groups = np.arange(len(values)) if groups is None else groups
    point, resampled, n_groups = _weighted_means(values, groups, n_resamples, seed)
    return _interval(point, resampled, n_groups, _check_confidence(confidence))


def paired_mean_difference(values_a, values_b, groups=None, n_resamples=N_RESAMPLES, seed=0, confidence=CONFIDENCE):
    """Paired difference of two models' mean per-image values on the same test images: ``mean_a - mean_b`` on
    every resample, its percentile interval and two-sided bootstrap p-value (as
    ``kmedssl.eval.intervals.paired_difference``). Returns an ``Interval`` with ``p_value``."""
    values_a = _rows("values_a", values_a)
    values_b = _rows("values_b", values_b, len(values_a))
    groups = np.arange(len(values_a)) if groups is None else groups
    both = np.isfinite(values_a) & np.isfinite(values_b)
    a, b = np.where(both, values_a, np.nan), np.where(both, values_b, np.nan)
    point_a, resampled_a, n_groups = _weighted_means(a, groups, n_resamples, seed)
    point_b, resampled_b, _ = _weighted_means(b, groups, n_resamples, seed)
    return _interval(point_a - point_b, resampled_a - resampled_b, n_groups, _check_confidence(confidence),
                     paired=True)
