"""SSL health while training: collapse, effective rank, alignment and uniformity of the encoder's embeddings.

What lightly and solo-learn users look at first. Every ``every_n_epochs`` epochs :class:`SSLHealthMonitor`
embeds two fixed views of a fixed held-out batch with ``model.encoder.features(images, training=False)``
and writes four numbers into the epoch's ``logs`` (so into ``training_log.csv``):

- ``embedding_std`` (:func:`embedding_std`): the mean over the D dimensions of the standard deviation over
  the batch of the L2-normalised embeddings (SimSiam, Chen & He 2021 §4.1, Fig. 2; lightly's
  ``std_of_l2_normalized``). Collapsed: 0; isotropic: about ``1/sqrt(D)``.
- ``embedding_rank`` (:func:`embedding_rank`): RankMe (Garrido et al. 2023, Eq. 1), ``exp`` of the entropy of
  the L1-normalised singular values of the raw embeddings. Collapsed: 1; at most ``min(N, D)``.
- ``alignment`` (:func:`alignment`): Wang & Isola 2020, ``E ||f(x) - f(y)||^2`` over the positive pairs (the
  two views of one image), ``alpha = 2``. Collapsed: 0 (lower is better, but not alone).
- ``uniformity`` (:func:`uniformity`): Wang & Isola 2020, ``log E exp(-t ||f(x) - f(y)||^2)`` over all pairs
  of distinct images, ``t = 2``. Collapsed: 0; spread over the sphere: towards ``-4``.

``f`` is the L2-normalised embedding in alignment and uniformity (the papers' hypersphere). The standard
deviation, rank and uniformity are each the mean of their values on the two views. The two views come from
:func:`two_views`, one fixed augmentation of the held-out images (random resized crop + horizontal flip,
seeded), so the numbers do not depend on the method and are comparable across methods and epochs.

Every metric is written once with ``keras.ops`` (so it runs on torch, tensorflow and jax) and computed in
float32; the monitor turns them into Python floats for the progress bar and the CSV log. It prints one
warning line when the embeddings collapse (:func:`collapse_reason` gives the thresholds and why);
:func:`health_monitor` builds it from held-out records, and :func:`plot_training_curves` draws the loss
terms and these metrics from the training log.
"""

import logging
import math
import pathlib

import keras
import numpy as np
from keras import ops

from kmedssl.eval.features import extract_features
from kmedssl.losses.common import l2_normalize
from kmedssl.training.runs import commit, temporary_path

HEALTH_COLUMNS = ("embedding_std", "embedding_rank", "alignment", "uniformity")
RANKME_EPSILON = 1e-7  # Garrido et al. 2023, Eq. 1 (the value of their float32 code)
COLLAPSE_STD_FRACTION = 0.01  # collapse: embedding_std < 0.01 / sqrt(D) (see collapse_reason)
COLLAPSE_RANK = 1.5  # collapse: embedding_rank < 1.5


# === Metrics ===


def _check_embeddings(name, z, min_rows=1):
    shape = tuple(z.shape)
    if len(shape) != 2 or (shape[0] is not None and shape[0] < min_rows):
        raise ValueError(f"Expected {name} of shape (N, D) with N >= {min_rows}. Received: {name}.shape={shape}")


def embedding_std(embeddings):
    """Mean standard deviation of the L2-normalised embeddings (lightly's ``std_of_l2_normalized``).

    ``mean_d std_n(n(z)_{n,d})`` with the Bessel-corrected standard deviation over the N rows, as
    ``torch.std``. It is 0 when every row points the same way (complete collapse) and close to
    ``1/sqrt(D)`` for a zero-mean isotropic Gaussian ``z`` (SimSiam, Chen & He 2021, §4.1).

    Args:
        embeddings: (N, D), N >= 2.

    Returns:
        A float32 scalar tensor.
    """
    _check_embeddings("embeddings", embeddings, min_rows=2)
    z = l2_normalize(embeddings)  # (N, D) float32
    count = ops.cast(ops.shape(z)[0], "float32")
    centred = z - ops.mean(z, axis=0, keepdims=True)
    variance = ops.sum(ops.square(centred), axis=0) / (count - 1.0)  # (D,)
    return ops.mean(ops.sqrt(variance))


def embedding_rank(embeddings, epsilon=RANKME_EPSILON):
    """RankMe effective rank of the embeddings (Garrido et al. 2023, Eq. 1).

    ``RankMe(Z) = exp(-sum_{k=1}^{min(N, D)} p_k log p_k)``, ``p_k = sigma_k(Z) / ||sigma(Z)||_1 + epsilon``,
    on the raw (not normalised, not centred) embeddings, as the paper. It lies in ``[1, min(N, D)]`` (up to
    the ``epsilon`` terms): 1 for rows on one line (complete collapse), ``min(N, D)`` for equal singular
    values (orthonormal rows). An all-zero ``Z`` has rank 1 (no direction), not NaN.

    Args:
        embeddings: (N, D). epsilon: the ``epsilon`` of Eq. 1.

    Returns:
        A float32 scalar tensor.
    """
    _check_embeddings("embeddings", embeddings)
    z = ops.cast(embeddings, "float32")
    singular = ops.svd(z, full_matrices=False, compute_uv=False)  # (min(N, D),)
    total = ops.sum(singular)
    first = ops.cast(ops.arange(ops.shape(singular)[0]) == 0, "float32")  # a zero Z: all mass on one value
    p = ops.where(total > 0, singular / ops.maximum(total, 1e-30), first) + epsilon
    return ops.exp(-ops.sum(p * ops.log(p)))


def alignment(z_1, z_2, alpha=2.0):
    """Alignment of positive pairs (Wang & Isola 2020, §4.1): ``E_{(x, y) ~ p_pos} ||f(x) - f(y)||_2^alpha``.

    ``f`` = L2-normalised embedding; row ``i`` of ``z_1`` and of ``z_2`` are the two views of image ``i``.
    0 when the views map to the same point; at most ``2^alpha``.

    Args:
        z_1, z_2: (N, D) embeddings of the two views. alpha: the exponent (paper: 2).

    Returns:
        A float32 scalar tensor.
    """
    _check_embeddings("z_1", z_1)
    _check_embeddings("z_2", z_2)
    if tuple(z_1.shape) != tuple(z_2.shape):
        raise ValueError(f"Expected z_1 and z_2 of the same shape. Received: {tuple(z_1.shape)}, {tuple(z_2.shape)}")
    squared = ops.sum(ops.square(l2_normalize(z_1) - l2_normalize(z_2)), axis=-1)  # (N,)
    if alpha == 2.0:
        return ops.mean(squared)
    return ops.mean(ops.power(ops.sqrt(squared), alpha))


def uniformity(z, t=2.0):
    """Uniformity (Wang & Isola 2020, §4.1): ``log E_{x, y ~ p_data} exp(-t ||f(x) - f(y)||_2^2)``.

    Over the ``N (N - 1) / 2`` pairs of distinct rows (the authors' ``torch.pdist``), ``f`` = L2-normalised
    embedding, with ``||f(x) - f(y)||^2 = 2 - 2 f(x).f(y)``. 0 when every row is the same point (complete
    collapse); it decreases as the points spread over the sphere (towards ``-2t`` for large D).

    Args:
        z: (N, D), N >= 2. t: the temperature (paper: 2).

    Returns:
        A float32 scalar tensor.
    """
    _check_embeddings("z", z, min_rows=2)
    unit = l2_normalize(z)
    count = ops.shape(unit)[0]
    squared = ops.maximum(2.0 - 2.0 * ops.matmul(unit, ops.transpose(unit)), 0.0)  # (N, N)
    upper = ops.cast(ops.triu(ops.ones((count, count)), k=1), "float32")  # pairs i < j
    pairs = ops.sum(upper)
    return ops.log(ops.sum(ops.exp(-t * squared) * upper) / pairs)


def ssl_health(z_1, z_2):
    """The four health numbers of two views' embeddings, as Python floats keyed by ``HEALTH_COLUMNS``.

    ``embedding_std``, ``embedding_rank`` and ``uniformity`` are the mean of their values on ``z_1`` and
    ``z_2``; ``alignment`` pairs row ``i`` of ``z_1`` with row ``i`` of ``z_2``.

    Args:
        z_1, z_2: (N, D) embeddings of two views of the same N images, N >= 2.
    """
    z_1, z_2 = ops.convert_to_tensor(z_1, "float32"), ops.convert_to_tensor(z_2, "float32")
    values = {
        "embedding_std": 0.5 * (embedding_std(z_1) + embedding_std(z_2)),
        "embedding_rank": 0.5 * (embedding_rank(z_1) + embedding_rank(z_2)),
        "alignment": alignment(z_1, z_2),
        "uniformity": 0.5 * (uniformity(z_1) + uniformity(z_2)),
    }
    return {key: float(ops.convert_to_numpy(value)) for key, value in values.items()}


def collapse_reason(health, dim):
    """Why the embeddings count as collapsed (one phrase), or ``None`` when they do not.

    Collapsed means ``embedding_std < 0.01 / sqrt(D)`` or ``embedding_rank < 1.5``:

    - ``embedding_std`` is 0 for a complete collapse (every image embedded in the same direction; SimSiam
      without stop-gradient, Chen & He 2021 Fig. 2) and about ``1 / sqrt(D)`` for isotropic embeddings. Raw
      encoder features of a randomly initialised network already share a large mean direction, so they sit
      well below ``1 / sqrt(D)``: measured at initialisation on 64-256 phantom validation images, the
      ResNet-18 of ``simclr``'s phantom size gives ``0.11 / sqrt(D)``, a width-64 ResNet-18 at 128 px
      ``0.041 / sqrt(D)`` (D = 512), the phantom and small ViTs ``0.26-0.44 / sqrt(D)``. A floor of
      ``0.1 / sqrt(D)`` would flag those healthy starts; ``0.01 / sqrt(D)`` (a spread around the mean
      direction of 1 % of an isotropic embedding's) is 4x below the lowest of them and far above the
      ~0 of a real collapse.
    - RankMe is 1 when all embeddings lie on one line (a constant embedding, or one direction with a
      varying sign, which ``embedding_std`` misses) and at most ``min(N, D)``. It is computed on raw,
      uncentred embeddings (Eq. 1), so the shared mean direction of a fresh encoder keeps it low at first:
      2.7 for the width-64 ResNet-18, 7-17 for the ViTs, above. A fraction of D (e.g. 1 %, 5 at D = 512)
      would flag them; ``rank < 1.5`` means one direction carries most of the spread.

    Partial (dimensional) collapse shows as a falling ``embedding_rank`` curve in ``training_curves.png``,
    without a warning.

    Args:
        health: a dict with ``embedding_std`` and ``embedding_rank`` (as :func:`ssl_health` returns).
        dim: D, the embedding dimension.
    """
    std_floor = COLLAPSE_STD_FRACTION / math.sqrt(dim)
    if health["embedding_std"] < std_floor:
        return f"embedding_std {health['embedding_std']:.3g} < 0.01/sqrt(D) = {std_floor:.3g}"
    if health["embedding_rank"] < COLLAPSE_RANK:
        return f"embedding_rank {health['embedding_rank']:.3g} < {COLLAPSE_RANK:g}"
    return None


# === Views ===


def two_views(images, seed=0, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3), flip_probability=0.5):
    """Two fixed random views of each image: a random resized crop (back to the image size) and a flip.

    Per image and view, drawn from ``numpy.random.default_rng(seed)``: an area fraction ``a ~ U(scale)``
    and an aspect ratio ``r = exp(U(log ratio))`` give ``w = min(sqrt(a H W r), W)``,
    ``h = min(sqrt(a H W / r), H)`` (torchvision's RandomResizedCrop, with the box clipped to the image
    instead of redrawn), placed uniformly; the box is resized with
    :func:`kmedssl.views.augment.crop_and_resize` (bilinear, anti-aliased) and mirrored left-right with
    ``flip_probability``. The crop scale is the SimCLR / MulSupCon policy of paper 001 (Table 2), without
    the intensity jitter. The same seed gives the same views on every backend (up to float rounding).

    Args:
        images: (N, H, W, C) floats in [0, 1].

    Returns:
        ``(view_1, view_2)``, each (N, H, W, C) float32 NumPy arrays.
    """
    from kmedssl.views.augment import crop_and_resize

    images = np.asarray(images, "float32")
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"Expected square images (N, H, W, C). Received: images.shape={images.shape}")
    count, size = images.shape[0], images.shape[1]
    rng = np.random.default_rng(seed)
    views = []
    for _ in range(2):
        area = rng.uniform(*scale, count) * size * size
        aspect = np.exp(rng.uniform(*np.log(ratio), count))
        width = np.minimum(np.sqrt(area * aspect), size)
        height = np.minimum(np.sqrt(area / aspect), size)
        top, left = rng.uniform(0, 1, count) * (size - height), rng.uniform(0, 1, count) * (size - width)
        boxes = np.stack([top, left, height, width], axis=1).astype("float32")
        view = np.asarray(ops.convert_to_numpy(crop_and_resize(images, boxes, size)), "float32")
        flip = rng.uniform(0, 1, count) < flip_probability
        view[flip] = view[flip, :, ::-1]
        views.append(np.clip(view, 0.0, 1.0))
    return views[0], views[1]


# === Callback ===


class SSLHealthMonitor(keras.callbacks.Callback):
    """Logs ``embedding_std``, ``embedding_rank``, ``alignment`` and ``uniformity`` every N epochs.

    At the end of epochs ``e`` (0-based) with ``(e + 1) % every_n_epochs == 0`` the encoder
    (``model.encoder.features(images, training=False)``) embeds the two fixed views of the held-out batch
    and :func:`ssl_health` writes its four Python floats into ``logs``; on the other epochs they are NaN,
    so that every epoch has the keys (as :class:`kmedssl.eval.monitor.ProbeMonitor`). Place the monitor
    before ``CSVLogger`` / the checkpointer in the ``callbacks`` list. No variable is written, so training
    is unchanged (and a resumed run logs the same values).

    When the embeddings become collapsed (:func:`collapse_reason`), one line is printed to stdout, like
    Keras's progress bar (with ``keras.config.disable_interactive_logging()``, it is logged as a warning of
    the ``kmedssl.training.ssl_health`` logger instead), once per collapse onset: again only after a
    measured epoch that was not collapsed. The line is printed at the start of the next epoch or at the end
    of training (of each ``fit``), whichever comes first, so that it follows the progress bar's finished
    line instead of breaking into it.

    Args:
        images_view_1, images_view_2: (N, H, W, C) two views of the same N held-out images (not used in
            pretraining), e.g. :func:`two_views` of them, or the frontal and lateral images of N studies.
        every_n_epochs: period in epochs.
        batch_size: feature extraction batch size.
        warn_on_collapse: print the collapse warning (e.g. False on all but the main process of a
            multi-process run); the values are logged either way.
    """

    def __init__(self, images_view_1, images_view_2, every_n_epochs=1, batch_size=64, warn_on_collapse=True):
        super().__init__()
        images_view_1 = np.asarray(images_view_1, "float32")
        images_view_2 = np.asarray(images_view_2, "float32")
        if images_view_1.ndim != 4 or images_view_1.shape != images_view_2.shape or len(images_view_1) < 2:
            raise ValueError(
                f"Expected two views of the same shape (N, H, W, C) with N >= 2. Received: images_view_1.shape="
                f"{images_view_1.shape}, images_view_2.shape={images_view_2.shape}"
            )
        if isinstance(every_n_epochs, bool) or int(every_n_epochs) != every_n_epochs or every_n_epochs < 1:
            raise ValueError(f"Expected every_n_epochs >= 1. Received: every_n_epochs={every_n_epochs}")
        if batch_size < 1:
            raise ValueError(f"Expected batch_size >= 1. Received: batch_size={batch_size}")
        self.images_view_1 = images_view_1
        self.images_view_2 = images_view_2
        self.every_n_epochs = int(every_n_epochs)
        self.batch_size = batch_size
        self.warn_on_collapse = warn_on_collapse
        self.dim = None  # D, known after the first measured epoch
        self.collapsed = False
        self.pending_message = None

    def on_train_begin(self, logs=None):
        if not hasattr(self.model, "encoder") or not hasattr(self.model.encoder, "features"):
            raise ValueError(
                f"Expected a model with an `encoder` that has `features(images)`. Received: {type(self.model).__name__}"
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._print_pending()

    def on_train_end(self, logs=None):
        self._print_pending()

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if (epoch + 1) % self.every_n_epochs:
            logs.update({key: float("nan") for key in HEALTH_COLUMNS})
            return
        health, self.dim = self.measure()
        logs.update(health)
        reason = collapse_reason(health, self.dim)
        if reason is not None and not self.collapsed and self.warn_on_collapse:
            self.pending_message = (f"Warning: the embeddings collapsed at epoch {epoch + 1} ({reason}); "
                                    "see embedding_std and embedding_rank in training_log.csv")
        self.collapsed = reason is not None

    def measure(self):
        """``(health, D)``: :func:`ssl_health` of the two views with the encoder as it is now, and D."""
        encoder = self.model.encoder
        z_1 = extract_features(encoder, self.images_view_1, self.batch_size)  # (N, D)
        z_2 = extract_features(encoder, self.images_view_2, self.batch_size)
        return ssl_health(z_1, z_2), z_1.shape[1]

    def _print_pending(self):
        if self.pending_message is not None:
            if keras.config.is_interactive_logging_enabled():
                print(self.pending_message, flush=True)
            else:
                logging.getLogger(__name__).warning(self.pending_message)
            self.pending_message = None


def health_monitor(source, records, image_size, seed=0, every_n_epochs=1, max_images=256, warn_on_collapse=True):
    """``[SSLHealthMonitor]`` on :func:`two_views` of up to ``max_images`` of ``records``; ``[]`` with under 2.

    The images are chosen as ``kmedssl.training.loop.probe_monitor`` chooses them (the first ``max_images``
    of a permutation drawn from ``seed``), so with the same records and seed the probe and the health
    metrics see the same images; labels are not needed.

    Args:
        source: a data source (``load_image(record, image_size)`` -> (H, W) floats in [0, 1]).
        records: held-out records, e.g. the validation split (never the pretraining split).
        image_size: the recipe's image size. seed: image choice and view seed.
        every_n_epochs, warn_on_collapse: as :class:`SSLHealthMonitor`. max_images: N.
    """
    if len(records) < 2:
        return []
    chosen = [records[i] for i in np.random.default_rng(seed).permutation(len(records))[:max_images]]
    images = np.stack([source.load_image(record, image_size)[..., None] for record in chosen])
    return [SSLHealthMonitor(*two_views(images, seed=seed), every_n_epochs=every_n_epochs,
                             warn_on_collapse=warn_on_collapse)]


# === Figure ===


def plot_training_curves(rows, path, dim=None, title="Training curves"):
    """The loss terms and the SSL health metrics of a run against the epoch, written to ``path`` (PNG).

    The first panel holds the loss terms (``loss``, the total, wide and grey, and every ``*_loss`` column), then
    one panel per metric present (``HEALTH_COLUMNS``, then ``probe_auroc``), three panels a row, each drawn
    over the epochs where it was measured (NaN and empty cells are skipped). Dashed lines mark the collapse
    levels: ``embedding_rank`` 1.5 (the warning of :func:`collapse_reason`), ``uniformity`` 0, and
    ``embedding_std`` 0, or with ``dim`` its warning level ``0.01/sqrt(D)`` and the isotropic ``1/sqrt(D)``.

    Args:
        rows: the log rows, one dict per finished epoch, as ``kmedssl.training.runs.write_log`` writes them
            (``epoch`` and numbers; strings read back from ``training_log.csv`` are converted).
        path: output PNG file. dim: D, the embedding dimension, if known. title: figure title.

    Returns:
        ``path`` as a ``pathlib.Path``, written atomically (``kmedssl.training.runs.commit``).
    """
    from matplotlib.ticker import MaxNLocator

    from kmedssl.eval.plots import _colors, _figure, _save

    rows = list(rows)
    if not rows or any("epoch" not in row for row in rows):
        raise ValueError(f"Expected training log rows, each with an 'epoch'. Received: {rows[:2]!r}")
    keys = {key for row in rows for key in row}
    terms = sorted(key for key in keys if key.endswith("_loss"))
    panels = ["loss terms", *(key for key in (*HEALTH_COLUMNS, "probe_auroc") if key in keys)]
    columns = min(3, len(panels))
    figure, _ = _figure((4.4 * columns, 3.4 * math.ceil(len(panels) / columns)))
    figure.clear()
    grid = figure.subplots(math.ceil(len(panels) / columns), columns, squeeze=False).ravel()

    def draw(axes, key, **style):
        points = [(_number(row["epoch"]), _number(row.get(key))) for row in rows]
        points = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y)]
        axes.plot([x for x, _ in points], [y for _, y in points], **{"marker": "o", "markersize": 3, "linewidth": 1.6,
                                                                     **style})

    if "loss" in keys:
        draw(grid[0], "loss", color="black", linewidth=3.2, alpha=0.45, label="loss")  # under a term equal to it
    for key, color in zip(terms, _colors(max(len(terms), 1))):
        draw(grid[0], key, color=color, label=key)
    grid[0].set(ylabel="loss")
    if "loss" in keys or terms:
        grid[0].legend(fontsize="small")
    warning, collapsed, isotropic = ("collapse warning", "tab:red"), ("collapsed", "tab:red"), ("isotropic", "0.5")
    levels = {"embedding_rank": [(COLLAPSE_RANK, *warning)], "uniformity": [(0.0, *collapsed)],
              "embedding_std": ([(1 / math.sqrt(dim), *isotropic), (COLLAPSE_STD_FRACTION / math.sqrt(dim), *warning)]
                                if dim else [(0.0, *collapsed)])}
    for axes, key in zip(grid[1:], panels[1:]):
        draw(axes, key, color="tab:blue")
        for level, label, color in levels.get(key, []):
            axes.axhline(level, linestyle="--", linewidth=1, color=color, label=label)
        if key in levels:
            axes.legend(fontsize="small")
    for axes, name in zip(grid, panels):
        axes.set(xlabel="epoch", title=name)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    for axes in grid[len(panels):]:
        axes.set_visible(False)
    figure.suptitle(title)
    figure.tight_layout()
    path = pathlib.Path(path)  # written atomically, as every file of a run directory
    commit(_save(figure, temporary_path(path, suffix=".png")), path)
    return path


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")
