"""ACE's learned-property probes for any encoder with ``features(images)`` (paper 004 §5.1, Figs. 3-5).

Cropping, masking and resizing are NumPy/PIL; the encoder is only called through
:func:`kmedssl.eval.features.extract_features`. Every crop is resized (bilinear, anti-aliased when shrinking)
to the encoder's input size: ``image_size`` when given, else ``encoder.image_size``, else the images' own
size. ``cos(a, b) = a.b / max(|a| |b|, 1e-12)``; all randomness comes from ``numpy.random.default_rng(seed)``.

What the paper does, and what is done here:

1. **Compositionality** (§5.1 (1), Fig. 3). Paper: random patches of ChestX-ray14 test images are split into
   2 or 4 non-overlapping sub-patches; the patch and its sub-patches are resized to 448 x 448, and the
   cosine similarity between the patch's embedding and the mean of its sub-patches' embeddings,
   ``cos(f(P), mean_i f(P_i))``, is plotted as a Gaussian KDE. Here: ``num_patches`` square patches of
   ``patch_size_px`` pixels at uniform positions of uniformly drawn images; "2" splits each patch into two
   halves (left/right or top/bottom, drawn at random per patch; the paper does not say which), "4" into
   its 2 x 2 quadrants; both similarities are returned per patch, with their means.
2. **Decompositionality** (§5.1 (2), Fig. 4). Paper: the test set is divided into batches of 32 images; in
   each image ``X_j`` a random region ``C_j`` "sized between 30-60% of the original image" is cut out
   (``X_j-excised``), and ``f(X_j) - f(X_j-excised) ≈ f(C_j)`` is checked by cosine similarity; an accuracy
   is reported without its rule being written down. Here: consecutive full batches of ``batch_size``
   images (a smaller remainder is left out so that chance is exactly ``1 / batch_size``); ``C_j`` is a
   square whose *area* is a uniform fraction in ``area_range`` of the image (clipped to fit); the excised
   image is ``X_j`` with ``C_j`` set to 0; ``C_j`` alone is resized to the input size. Query ``j`` is
   correct when ``argmax_k cos(f(X_j) - f(X_j\\C_j), f(C_k)) = j`` over the ``batch_size`` regions of its
   batch. The per-image ``cos(f(X_j) - f(X_j\\C_j), f(C_j))`` is returned too.
3. **Patch-to-image retrieval** (§5.1 (3), Fig. 5). Paper: per batch of 32 test images, one random image
   gives a random patch as the query; it is correct when its source image has the highest cosine
   similarity among the batch's full-image embeddings. Here: every image of each full batch gives one
   query (the same expected accuracy, ``batch_size`` times more queries); the patch size is not given in
   the paper, so the patch is a square of area fraction drawn from ``area_range`` as in (2).
"""

import pathlib

import numpy as np
from PIL import Image

from kmedssl.eval.features import extract_features


def compositionality(encoder, images, patch_size_px, num_patches=256, image_size=None, batch_size=64, seed=0):
    """Cosine between each random patch's embedding and the mean embedding of its 2 and 4 sub-patches.

    ``s_n(P) = cos(f(P), (1/n) sum_{i<n} f(P_i))`` for n in {2, 4} (paper 004 §5.1 (1)).

    Args:
        encoder: a model with ``features((B, S, S, C)) -> (B, D)``.
        images: (N, H, W, C) float images.
        patch_size_px: even side of the square patches, at most ``min(H, W)``.
        num_patches: number of patches drawn.
        image_size: encoder input side S (default: ``encoder.image_size``, else the images' side).
        batch_size: patches embedded together (each brings 7 crops: itself, 2 halves, 4 quarters).
        seed: seed of the image choice, the positions and the half orientations.

    Returns:
        ``{"similarities": {"2": (num_patches,), "4": (num_patches,)}, "mean": {"2": float, "4": float}}``.
    """
    images = check_images(images)
    _, height, width, _ = images.shape
    if patch_size_px < 2 or patch_size_px % 2 or patch_size_px > min(height, width):
        raise ValueError(
            f"Expected an even patch_size_px between 2 and min(H, W) = {min(height, width)}. "
            f"Received: patch_size_px={patch_size_px}"
        )
    if num_patches < 1 or batch_size < 1:
        raise ValueError(f"Expected num_patches, batch_size >= 1. Received: {num_patches}, {batch_size}")
    size = input_size(encoder, images, image_size)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(images), num_patches)  # (P,)
    tops = rng.integers(0, height - patch_size_px + 1, num_patches)
    lefts = rng.integers(0, width - patch_size_px + 1, num_patches)
    vertical_cut = rng.integers(0, 2, num_patches).astype(bool)  # True: left/right halves

    half = patch_size_px // 2
    similarities = {"2": [], "4": []}
    for start in range(0, num_patches, batch_size):
        crops = []
        for i in range(start, min(start + batch_size, num_patches)):
            patch = images[picks[i], tops[i]:tops[i] + patch_size_px, lefts[i]:lefts[i] + patch_size_px]
            halves = [patch[:, :half], patch[:, half:]] if vertical_cut[i] else [patch[:half], patch[half:]]
            quarters = [patch[r:r + half, c:c + half] for r in (0, half) for c in (0, half)]
            crops.extend(resize(crop, size) for crop in [patch, *halves, *quarters])
        features = embed(encoder, crops).reshape(len(crops) // 7, 7, -1)  # (b, 7, D): patch, 2 halves, 4 quarters
        similarities["2"].append(cosine(features[:, 0], features[:, 1:3].mean(axis=1)))
        similarities["4"].append(cosine(features[:, 0], features[:, 3:7].mean(axis=1)))
    similarities = {n: np.concatenate(values) for n, values in similarities.items()}
    return {"similarities": similarities, "mean": {n: float(v.mean()) for n, v in similarities.items()}}


def decompositionality(encoder, images, area_range=(0.3, 0.6), batch_size=32, image_size=None, seed=0):
    """Accuracy of recognising ``f(C_j)`` from ``f(X_j) - f(X_j without C_j)`` in batches (paper 004 §5.1 (2)).

    Args:
        encoder: a model with ``features((B, S, S, C)) -> (B, D)``.
        images: (N, H, W, C) float images, N >= ``batch_size``; batches are consecutive images.
        area_range: the removed square's area as a fraction of the image, drawn uniformly in this range.
        batch_size: candidates per query (32 in the paper).
        image_size: encoder input side S (default: ``encoder.image_size``, else the images' side).
        seed: seed of the region sizes and positions.

    Returns:
        ``{"accuracy": float, "cosine": (M,), "mean_cosine": float, "n_queries": M, "chance": 1/batch_size}``
        where ``cosine[j] = cos(f(X_j) - f(X_j\\C_j), f(C_j))`` and ``M = batch_size * (N // batch_size)``.
    """
    images, count = check_batches(images, batch_size)
    size = input_size(encoder, images, image_size)
    boxes = random_boxes(np.random.default_rng(seed), count, images.shape[1], images.shape[2], area_range)
    correct, matched = [], []
    for start in range(0, count, batch_size):  # one batch of images in memory at a time
        wholes, excised, regions = [], [], []
        for image, (top, left, side) in zip(images[start:start + batch_size], boxes[start:start + batch_size]):
            cut = image.copy()
            cut[top:top + side, left:left + side] = 0.0
            wholes.append(resize(image, size))
            excised.append(resize(cut, size))
            regions.append(resize(image[top:top + side, left:left + side], size))
        difference = embed(encoder, wholes) - embed(encoder, excised)  # (B, D)
        region_features = embed(encoder, regions)  # (B, D)
        correct.append(top1_is_own(difference, region_features))
        matched.append(cosine(difference, region_features))
    correct, matched = np.concatenate(correct), np.concatenate(matched)
    return {
        "accuracy": float(correct.mean()),
        "cosine": matched,
        "mean_cosine": float(matched.mean()),
        "n_queries": int(count),
        "chance": 1.0 / batch_size,
    }


def patch_to_image_retrieval(encoder, images, area_range=(0.3, 0.6), batch_size=32, image_size=None, seed=0):
    """Top-1 accuracy of retrieving a patch's source image among a batch's full images (paper 004 §5.1 (3)).

    Args:
        encoder: a model with ``features((B, S, S, C)) -> (B, D)``.
        images: (N, H, W, C) float images, N >= ``batch_size``; batches are consecutive images.
        area_range: the query patch's area as a fraction of the image, drawn uniformly in this range.
        batch_size: candidate images per query (32 in the paper).
        image_size: encoder input side S (default: ``encoder.image_size``, else the images' side).
        seed: seed of the patch sizes and positions.

    Returns:
        ``{"accuracy": float, "n_queries": M, "chance": 1/batch_size}``, ``M = batch_size * (N // batch_size)``.
    """
    images, count = check_batches(images, batch_size)
    size = input_size(encoder, images, image_size)
    boxes = random_boxes(np.random.default_rng(seed), count, images.shape[1], images.shape[2], area_range)
    correct = []
    for start in range(0, count, batch_size):  # one batch of images in memory at a time
        patches, wholes = [], []
        for image, (top, left, side) in zip(images[start:start + batch_size], boxes[start:start + batch_size]):
            patches.append(resize(image[top:top + side, left:left + side], size))
            wholes.append(resize(image, size))
        correct.append(top1_is_own(embed(encoder, patches), embed(encoder, wholes)))
    correct = np.concatenate(correct)
    return {"accuracy": float(correct.mean()), "n_queries": int(count), "chance": 1.0 / batch_size}


def plot_similarity_distribution(similarities, path, title="Compositionality: patch vs. mean of its sub-patches",
                                 xlabel="cosine similarity"):
    """Gaussian KDE of each named array with its mean dashed, as paper 004 Fig. 3.

    An array with a single distinct value (no spread for a KDE) is drawn as a solid vertical line. The x range
    follows the data. Drawn on a Matplotlib Agg canvas (no pyplot, no global backend switch); Matplotlib is
    imported lazily.

    Args:
        similarities: ``{name: (n,) array}``, e.g. ``{"ACE, 4 sub-patches": ..., "random init, 4 sub-patches": ...}``.
        path: the PNG file to write (its folder is created).

    Returns:
        ``path``.
    """
    if not similarities or any(np.asarray(v).size == 0 for v in similarities.values()):
        raise ValueError(f"Expected a non-empty dict of non-empty arrays. Received: {list(similarities)}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from scipy.stats import gaussian_kde

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = {name: np.asarray(v, dtype="float64").ravel() for name, v in similarities.items()}
    low, high = min(v.min() for v in values.values()), max(v.max() for v in values.values())
    margin = 0.1 * max(high - low, 1e-3)  # the x range follows the data: similarities may all lie near 1
    low, high = low - margin, high + margin
    grid = np.linspace(low, high, 512)
    figure = Figure(figsize=(7, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for i, (name, value) in enumerate(values.items()):
        color = f"C{i}"
        if np.unique(value).size >= 2:
            label = f"{name} (mean {value.mean():.4f}, n={value.size})"
            axes.plot(grid, gaussian_kde(value)(grid), color=color, linewidth=2, label=label)
            axes.axvline(value.mean(), color=color, linestyle="--", linewidth=1)
        else:  # a KDE needs spread: a single repeated value is drawn as a vertical line
            axes.axvline(value[0], color=color, linewidth=2.5, label=f"{name} (all {value.size} = {value[0]:.4f})")
    axes.set_xlim(low, high)
    axes.set_ylim(bottom=0)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("density")
    axes.legend(loc="best", fontsize="small")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return path


# === Helpers ===
def check_images(images):
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"Expected images of shape (N, H, W, C) with N >= 1. Received: shape={images.shape}")
    return images


def check_batches(images, batch_size):
    """Validated images and the number of images in full batches."""
    images = check_images(images)
    if batch_size < 2 or len(images) < batch_size:
        raise ValueError(
            f"Expected batch_size >= 2 and at least batch_size images. Received: batch_size={batch_size}, "
            f"{len(images)} images"
        )
    return images, batch_size * (len(images) // batch_size)


def input_size(encoder, images, image_size):
    """The encoder's input side: ``image_size``, else ``encoder.image_size``, else the images' (square) side."""
    size = image_size or getattr(encoder, "image_size", None)
    if size is None:
        if images.shape[1] != images.shape[2]:
            raise ValueError(f"Expected image_size for non-square images. Received: images.shape={images.shape}")
        size = images.shape[1]
    return int(size)


def resize(crop, size):
    """``(h, w, C) -> (size, size, C)`` float32, bilinear per channel (PIL anti-aliases when shrinking)."""
    if crop.shape[:2] == (size, size):
        return crop
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(crop[..., c])).resize((size, size), Image.Resampling.BILINEAR))
        for c in range(crop.shape[-1])
    ]
    return np.stack(channels, axis=-1).astype("float32")


def random_boxes(rng, count, height, width, area_range):
    """``count`` square boxes ``(top, left, side)`` of area fraction ~ U(area_range), uniformly placed."""
    low, high = area_range
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"Expected 0 < low <= high <= 1. Received: area_range={area_range}")
    fractions = rng.uniform(low, high, count)
    sides = np.clip(np.round(np.sqrt(fractions * height * width)), 1, min(height, width)).astype(int)
    tops = rng.integers(0, height - sides + 1)
    lefts = rng.integers(0, width - sides + 1)
    return list(zip(tops, lefts, sides))


def embed(encoder, crops):
    """Features of a list of (S, S, C) crops, in one batch: (M, D) float64."""
    return extract_features(encoder, np.stack(crops), batch_size=len(crops)).astype("float64")


def cosine(a, b):
    """Row-wise cosine similarity of (M, D) arrays -> (M,)."""
    norms = np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
    return np.sum(a * b, axis=-1) / norms


def top1_is_own(queries, candidates):
    """(B,) bool: is query j's most cosine-similar candidate (first on ties) candidate j?"""
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)  # noqa: E731
    similarity = unit(queries) @ unit(candidates).T  # (B, B)
    return np.argmax(similarity, axis=1) == np.arange(len(similarity))
