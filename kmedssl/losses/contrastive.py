"""The contrastive losses' one form and its one dispatch (``nt_xent``, ``multiview_infonce``, ``tsp_infonce``,
``jaccard_supcon`` are thin wrappers around ``contrastive_loss``).

Every contrastive loss of kmedssl is one form over the unit rows z of V views of b samples, stacked
view-major (all of view 0, then view 1, ...; z = n(view rows)), declared by a **positive structure** and a
**similarity**:

    L[i, j] = logit(z_i . z_j)                       similarity: c / T, or scale * sim_tsp(c) (paper 003, Eq. 1)
    lse_i   = log sum_{j in den(i)} exp L[i, j]      den(i): every row but i (and, optionally, but pos(i))
    loss    = factor * mean_{anchors i} 1/max(|P(i)|, 1) sum_{j in P(i)} W[i, j] (lse_i - L[i, j])

- ``PairedPositives``: two views; the positive of a row is the same sample's row in the other view, W = 1
  (NT-Xent; paper 000, Eq. 2 with ``exclude_positive``; paper 003, Eq. 2).
- ``JaccardPositives``: P(i) = {j != i : J[i, j] >= threshold}, W = J, the Jaccard overlap of the rows'
  multi-hot labels (``jaccard_matrix``; paper 001, Eq. 3).
- ``CosineSimilarity(temperature)``: ``L = c / T``. ``TSPSimilarity(kappa, scale)``: ``L = scale * tsp(c)``.

``contrastive_loss`` dispatches, first on the replica path (``kmedssl.losses.replicas.replica_path``):

- ``"gathered"`` (a replicated engine, ``gather="global"``): this replica's rows are the anchors, the rows of
  every replica (gathered replica-major) the candidates; the loss is the mean over the local anchors.
- ``"grouped"`` (JAX's global program, ``gather="local"``): the mean over device groups of each group's loss.
- ``"plain"``: the rows this program sees are both the anchors and the candidates: the gathered path with
  one replica (no gather, offset 0, every row an anchor).

then, for the rows one program contrasts, on the implementation (docs/kernels.md):

- the Triton fused op of ``kmedssl_kernels`` (not on the gathered path) when one serves the pair
  (paired without ``exclude_positive`` + T-SP with a number kappa: ``tsp_infonce``; Jaccard + cosine with
  number hyper-parameters and factor: ``jaccard_supcon``) and ``kmedssl.ops.kernels.use_triton`` allows it
  (torch tensors on CUDA);
- else the row-blocked path (``kmedssl.losses.blocked``, memory O(block² + R·D)) when ``block_size >= 1``,
  or with ``block_size=None`` when the candidate rows R > ``blocked.AUTO_BLOCKED_ROWS`` (on CUDA torch tensors:
  only when the plain matrices would not fit in free device memory, ``kmedssl.ops.kernels.naive_fits``);
- else the naive path: the plain ``(anchors, candidates)`` matrices (``_naive_loss``).

All paths give the same value and gradients (tests/losses).
"""

import functools
import numbers

from keras import ops

from kmedssl.losses import blocked, replicas
from kmedssl.losses.common import EXCLUDED_LOGIT, l2_normalize, tensor_arguments
from kmedssl.ops.kernels import fused_op, naive_fits, on_cuda, use_triton


# === Similarities ===


def tsp(cosine, kappa):
    """T-SP similarity of a cosine (paper 003, Eq. 1): ``0.5 (1 + c) / (1 + (1 - c) kappa)``, in [0, 1]."""
    return 0.5 * (1.0 + cosine) / (1.0 + (1.0 - cosine) * kappa)


def tsp_derivatives(cosine, similarity, kappa):
    """``(dsim/dc, dsim/dkappa)`` of ``similarity = tsp(cosine, kappa)``: with ``q = 1 + (1 - c) kappa``,
    ``(0.5 (1 + 2 kappa) / q², -sim (1 - c) / q)``."""
    denominator = 1.0 + (1.0 - cosine) * kappa
    return 0.5 * (1.0 + 2.0 * kappa) / ops.square(denominator), -similarity * (1.0 - cosine) / denominator


class CosineSimilarity:
    """``L[i, j] = c_ij / T`` (InfoNCE, NT-Xent, SupCon). The row-blocked path sees it as ``scale * sim(c)``
    with ``scale = 1 / T`` and ``sim(c) = c``."""

    def __init__(self, temperature):
        self.temperature = temperature
        self.scale = 1.0 / temperature
        self.kappa = None

    def logits(self, cosine):
        return cosine / self.temperature

    @staticmethod
    def function(cosine, kappa):
        return cosine

    @staticmethod
    def derivatives(cosine, similarity, kappa):
        return 1.0, 0.0


class TSPSimilarity:
    """``L[i, j] = scale * tsp(c_ij, kappa)`` (S-PCL, paper 003, Eqs. 1-2); ``scale`` and ``kappa`` are numbers
    or scalar tensors, and both receive gradients."""

    function = staticmethod(tsp)
    derivatives = staticmethod(tsp_derivatives)

    def __init__(self, kappa, scale):
        self.kappa = kappa
        self.scale = scale

    def logits(self, cosine):
        return ops.cast(self.scale, "float32") * tsp(cosine, self.kappa)


# === Positive structures ===
# ``targets(rows_i, rows_j, labels_i, labels_j, group_rows) -> (W, is_positive, in_denominator)``, each
# ``(len(rows_i), len(rows_j))``, from global row ids (int32) in the replica-major layout of groups of
# ``group_rows`` rows (one group per replica; one group on the plain path) and their label rows.


def jaccard_matrix(labels_a, labels_b):
    """``J[a, p] = |y_a and y_p| / |y_a or y_p|`` of multi-hot rows (paper 001, Eq. 3), **0 when both rows are
    empty** (never NaN): ``(M, K), (N, K)`` float32 -> ``(M, N)``."""
    intersection = ops.matmul(labels_a, ops.transpose(labels_b))  # (M, N)
    union = ops.sum(labels_a, axis=1)[:, None] + ops.sum(labels_b, axis=1)[None, :] - intersection
    return ops.divide_no_nan(intersection, union)


class PairedPositives:
    """Two views of each sample: in a group's 2b rows ``[z_a; z_b]``, row k's positive is row ``(k + b) mod 2b``
    (W = 1). The denominator is every candidate row but the anchor (positive included: NT-Xent, paper 003's
    Eq. 2), or with ``exclude_positive`` also not its positive (paper 000, Eq. 2)."""

    uses_labels = False

    def __init__(self, exclude_positive=False):
        self.exclude_positive = exclude_positive

    def validate_rows(self, views):
        """The local rows must have a denominator: with ``exclude_positive``, at least 2 samples."""
        if len(views) != 2:
            raise ValueError(f"Expected 2 views of each sample for paired positives. Received: {len(views)} views")
        if self.exclude_positive and views[0].shape[0] == 1:
            raise ValueError(
                "Expected a batch of at least 2 pairs (per device with gather='local') when exclude_positive=True "
                f"(the denominator of Eq. 2 is otherwise empty). Received: views of shape {tuple(views[0].shape)}"
            )

    def targets(self, rows_i, rows_j, labels_i, labels_j, group_rows):
        within = rows_i % group_rows  # (m,) position of row i in its group
        positives = rows_i - within + (within + group_rows // 2) % group_rows  # (m,)
        is_positive = rows_j[None, :] == positives[:, None]  # (m, n)
        in_denominator = rows_i[:, None] != rows_j[None, :]
        if self.exclude_positive:
            in_denominator = ops.logical_and(in_denominator, ops.logical_not(is_positive))
        return ops.cast(is_positive, "float32"), is_positive, in_denominator


class JaccardPositives:
    """Multi-label positives weighted by their Jaccard overlap (paper 001, Eq. 3):
    ``P(i) = {j != i : J[i, j] >= threshold}``, W = J on P(i); the denominator is every row but the anchor."""

    uses_labels = True

    def __init__(self, threshold):
        self.threshold = threshold

    def validate_rows(self, views):
        pass

    def targets(self, rows_i, rows_j, labels_i, labels_j, group_rows):
        jaccard = jaccard_matrix(labels_i, labels_j)  # (m, n)
        not_self = rows_i[:, None] != rows_j[None, :]
        is_positive = ops.logical_and(jaccard >= self.threshold, not_self)
        return ops.where(is_positive, jaccard, 0.0), is_positive, not_self


# === Dispatch ===


def contrastive_loss(views, positives, similarity, labels=None, factor=1.0, block_size=None, gather="global"):
    """The contrastive loss of the module docstring, by the path the running step and the rows call for.

    Args:
        views: V tensors ``(b, D)``, the V views of this program's b samples (float32 or bfloat16; normalised
            here). Paired positives take V = 2.
        positives: ``PairedPositives`` or ``JaccardPositives``.
        similarity: ``CosineSimilarity`` or ``TSPSimilarity``.
        labels: ``(b, K)`` multi-hot labels of the samples (label-weighted positives), else None.
        factor: a constant multiplying the loss (SupCon's ``T / T_base``; 1: none).
        block_size: None (auto), 0 (always the naive path) or the rows of one tile of the row-blocked path.
        gather: ``"global"`` or ``"local"`` (``kmedssl.losses.replicas``).

    Returns:
        float32 scalar: the loss of the rows this program contrasts (a replicated program's local mean).
    """
    blocked.validate_block_size(block_size)
    path = replicas.replica_path(gather)
    arguments = dict(positives=positives, similarity=similarity, factor=factor, block_size=block_size)
    if path == "grouped":
        num_views = len(views)

        def group_loss(*parts):
            group_labels = parts[num_views] if labels is not None else None
            return _program_loss(parts[:num_views], group_labels, gathered=False, **arguments)

        return replicas.grouped_mean(group_loss, *views, *([labels] if labels is not None else []))
    return _program_loss(views, labels, gathered=path == "gathered", **arguments)


def _program_loss(views, labels, positives, similarity, factor, block_size, gathered):
    """The loss of one program's anchors (its own samples' rows) against its candidates (the same rows, or
    with ``gathered`` every replica's): the Triton fused op, the row-blocked path or the naive path."""
    if not gathered:
        positives.validate_rows(views)
        fused = _fused_call(views, labels, positives, similarity, factor)
        if fused is not None:
            return _times(factor, fused())

    z_local = ops.concatenate([l2_normalize(view) for view in views], axis=0)  # (n, D) = (V b, D), view-major
    labels_local = None
    if positives.uses_labels:
        labels_local = ops.tile(ops.cast(labels, "float32"), (len(views), 1))  # (n, K)
    num_local = ops.shape(z_local)[0]
    anchor_ids = ops.arange(num_local, dtype="int32")  # (n,) global row ids of the anchors
    if gathered:
        z_all, labels_all, offset = replicas.gather_rows(z_local, labels_local)  # (R n, D), (R n, K)
        anchor_ids = offset + anchor_ids
    else:
        z_all, labels_all, offset = z_local, labels_local, 0
    targets = functools.partial(positives.targets, group_rows=num_local)

    def naive():
        return _naive_loss(z_local, z_all, anchor_ids, labels_local, labels_all, targets, similarity)

    def row_blocked(block):
        anchors = None  # every row is an anchor
        if gathered:
            rows = ops.arange(ops.shape(z_all)[0], dtype="int32")
            anchors = ops.cast(ops.logical_and(rows >= offset, rows < offset + num_local), "float32")  # (R n,)
        kappa = None if similarity.kappa is None else ops.cast(similarity.kappa, "float32")
        scale = ops.cast(similarity.scale, "float32")
        return blocked.blocked_loss(z_all, scale, kappa, labels_all, targets, similarity, block, anchors)

    return _times(factor, _blocked_or_naive(z_all, block_size, naive, row_blocked))


def _fused_call(views, labels, positives, similarity, factor):
    """The Triton fused op computing these rows' loss (before ``factor``) as a call, or None when none serves
    them or ``kmedssl.ops.kernels.use_triton`` declines (checked on the tensors as the caller passed them)."""
    if isinstance(positives, PairedPositives) and isinstance(similarity, TSPSimilarity):
        kappa, scale = similarity.kappa, similarity.scale
        sizes = {"op": "tsp_infonce", "rows": _stacked_rows(views), "dim": views[0].shape[-1]}
        if (not positives.exclude_positive and isinstance(kappa, numbers.Real)
                and use_triton(*views, *tensor_arguments(scale), **sizes)):
            return lambda: fused_op("tsp_infonce")(*views, kappa=kappa, scale=scale)
    if isinstance(positives, JaccardPositives) and isinstance(similarity, CosineSimilarity):
        temperature, threshold = similarity.temperature, positives.threshold
        sizes = {"op": "jaccard_supcon", "rows": _stacked_rows(views), "dim": views[0].shape[-1]}
        if not tensor_arguments(temperature, threshold, factor) and use_triton(*views, labels, **sizes):
            return lambda: fused_op("jaccard_supcon")(  # (b, V, D); base_temperature = T: factor 1 in the kernel
                ops.stack(views, axis=1), labels, temperature=temperature, threshold=threshold,
                base_temperature=temperature,
            )
    return None


def _stacked_rows(views):
    """V b, the rows the views stack into (None while a graph is traced with an unknown batch)."""
    batch = views[0].shape[0]
    return None if batch is None else len(views) * batch


def _blocked_or_naive(z_all, block_size, naive, row_blocked):
    """``row_blocked(block)`` or ``naive()`` by ``block_size`` and the candidate rows R (``blocked`` docstring)."""
    if block_size == 0:
        return naive()
    if block_size is not None:
        return row_blocked(block_size)
    num_rows = z_all.shape[0]
    if on_cuda(z_all) and naive_fits(num_rows, z_all.device):  # the blocked path is 15-60x slower on a GPU
        return naive()
    if num_rows is None:  # a graph traced with an unknown batch: decide when it runs
        return ops.cond(
            ops.shape(z_all)[0] > blocked.AUTO_BLOCKED_ROWS, lambda: row_blocked(blocked.DEFAULT_BLOCK_SIZE), naive
        )
    return row_blocked(blocked.DEFAULT_BLOCK_SIZE) if num_rows > blocked.AUTO_BLOCKED_ROWS else naive()


def _naive_loss(z_anchors, z_all, anchor_ids, labels_anchors, labels_all, targets, similarity):
    """The form of the module docstring from the plain ``(n, R)`` matrices of n anchors against R candidates,
    reduced as the row-blocked path reduces it (``blocked``):

        loss = mean_i (w_i lse_i - sum_j W[i, j] L[i, j]) / max(|P(i)|, 1),     w_i = sum_j W[i, j]
    """
    cosine = ops.matmul(z_anchors, ops.transpose(z_all))  # (n, R)
    logits = similarity.logits(cosine)  # (n, R)
    candidate_ids = ops.arange(ops.shape(z_all)[0], dtype="int32")  # (R,)
    weights, is_positive, in_denominator = targets(anchor_ids, candidate_ids, labels_anchors, labels_all)
    lse = ops.logsumexp(ops.where(in_denominator, logits, EXCLUDED_LOGIT), axis=1)  # (n,)
    weighted_logits = ops.sum(weights * logits, axis=1)  # (n,)
    num_positives = ops.sum(ops.cast(is_positive, "float32"), axis=1)  # (n,)
    return ops.mean((ops.sum(weights, axis=1) * lse - weighted_logits) / ops.maximum(num_positives, 1.0))


def _times(factor, loss):
    return loss if isinstance(factor, numbers.Real) and factor == 1 else factor * loss
