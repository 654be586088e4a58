"""95 % intervals for AUROC by a cluster bootstrap over test studies, and paired differences (SPEC §5).

Method (docs/evaluation.md, "Intervals"):

- **Resampling unit.** Rows (images, or fused studies) are grouped by ``groups`` (the study, SPEC §5); one
  resample draws as many groups as there are, uniformly with replacement, and takes every row of each
  drawn group (a cluster bootstrap). A group drawn c times counts c times. Seeded: the same ``groups`` and
  ``seed`` give the same resamples, so the intervals of two models (and their paired difference) computed
  with the same seed are on identical resampled test sets.
- **AUROC of a resample.** The Mann-Whitney form with ties counted 1/2, with every row weighted by its
  group's multiplicity: ``sum_{i pos, j neg} w_i w_j (1[s_i > s_j] + 1/2 1[s_i = s_j]) / (W_pos W_neg)``,
  which is exactly the AUROC of the explicitly resampled (duplicated) rows. It is computed for all
  resamples at once from one sort per label (cumulative negative weight below each score level), so 1,000
  resamples of thousands of studies take well under a second per label.
- **Labels and degenerate resamples.** The point estimate's macro AUROC averages the labels with both
  classes in the whole test set (``kmedssl.eval.metrics``: the others are ``None``). A resample averages
  the same labels, except that a label with a single class *in that resample* is left out of that
  resample's macro (and of its own per-label interval); ``n_incomplete`` counts the resamples where this
  happened (it is 0 unless a label has very few positives or negatives). A resample left with no label at
  all is dropped; ``n_resamples`` is the number of resamples an interval was computed from. Whether a label
  is defined in a resample depends on the labels only, so two models compared on the same rows always
  average the same labels in every resample.
- **Interval.** Percentile interval: the (1 - c)/2 and (1 + c)/2 quantiles (linear interpolation, NumPy's
  default) of the resampled statistic, c = ``confidence`` (0.95).
- **Paired difference.** ``d_b = macro_a(b) - macro_b(b)`` on the same resample b. Two-sided bootstrap
  p-value ``min(1, 2 min((1 + #{d_b <= 0}) / (B + 1), (1 + #{d_b >= 0}) / (B + 1)))``: the +1 keeps it
  above 0 (the smallest attainable value is 2 / (B + 1), 0.002 with B = 1,000), it equals 1 when the two
  models are identical, and it is the inversion of the percentile interval (p < 1 - c about when the
  interval excludes 0), so the interval and the p-value never disagree. A studentised bootstrap would
  need a variance per resample (a nested bootstrap, or DeLong's variance of a macro average of correlated
  labels) for little gain at the test-set sizes used here (>= 2,000 studies on the phantom).

Everything here is NumPy only (no Keras).
"""

import dataclasses
import math

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 1000
_BLOCK_ELEMENTS = 1 << 22  # resample x row weights held at once (32 MiB of float64)


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval.

    Attributes:
        estimate: the statistic on the test set itself.
        low, high: the interval's bounds.
        n_resamples: resamples the interval was computed from.
        n_groups: resampled groups (test studies).
        confidence: the interval's nominal coverage (0.95).
        p_value: two-sided bootstrap p-value of a paired difference (None for a plain value).
        n_incomplete: resamples in which a label with a single class was left out of the macro average.
        per_label: ``{name: Interval | None}`` for a macro AUROC (None: a single class in the test set).
    """

    estimate: float
    low: float
    high: float
    n_resamples: int
    n_groups: int
    confidence: float = CONFIDENCE
    p_value: float | None = None
    n_incomplete: int = 0
    per_label: dict = dataclasses.field(default_factory=dict)

    @property
    def is_difference(self):
        return self.p_value is not None

    def to_dict(self):
        """JSON-ready: floats, ints, None for undefined values; ``per_label`` nested the same way."""
        out = {"estimate": _json_float(self.estimate), "low": _json_float(self.low),
               "high": _json_float(self.high), "confidence": self.confidence,
               "n_resamples": int(self.n_resamples), "n_groups": int(self.n_groups),
               "n_incomplete": int(self.n_incomplete)}
        if self.p_value is not None:
            out["p_value"] = _json_float(self.p_value)
        if self.per_label:
            out["per_label"] = {name: None if v is None else v.to_dict() for name, v in self.per_label.items()}
        return out

    def __str__(self):
        return format_interval(self)


def _json_float(value):
    return None if value is None or not math.isfinite(value) else float(value)


def format_interval(x, digits=3):
    """``"0.712 [0.688, 0.735]"``, or for a difference ``"+0.031 [+0.012, +0.050], p = 0.002"``.

    Args:
        x: an ``Interval`` or its ``to_dict()`` (a difference is one with a ``p_value``).
        digits: decimals of the estimate and bounds (the p-value always has 3, or reads ``p < 0.001``).
    """
    get = (lambda k: x.get(k)) if isinstance(x, dict) else (lambda k: getattr(x, k, None))
    p_value = get("p_value")
    sign = "+" if p_value is not None else ""

    def number(value):
        if value is None or not math.isfinite(value):
            return "n/a"
        value = round(float(value), digits) + 0.0  # no "-0.000"
        return f"{value:{sign}.{digits}f}"

    text = f"{number(get('estimate'))} [{number(get('low'))}, {number(get('high'))}]"
    if p_value is not None:
        text += ", p < 0.001" if p_value < 0.001 else f", p = {p_value:.3f}"
    return text


# === Resampling ===

def _group_index(groups):
    """``(index (N,) int64, n_groups)``: groups numbered in sorted order (order of first appearance when the
    ids cannot be sorted), so the resamples do not depend on the order of the rows."""
    groups = np.asarray(groups) if not isinstance(groups, np.ndarray) else groups
    if groups.ndim == 2:  # rows of ids, e.g. (subject, study)
        groups = [tuple(row) for row in groups.tolist()]
    elif groups.ndim != 1:
        raise ValueError(f"Expected 1-D group ids (one per row). Received: shape {groups.shape}")
    keys = groups.tolist() if isinstance(groups, np.ndarray) else list(groups)
    if not keys:
        raise ValueError("Expected at least one row. Received: no group ids")
    unique = set(keys)
    try:
        ordered = sorted(unique)
    except TypeError:
        ordered = list(dict.fromkeys(keys))
    number = {key: n for n, key in enumerate(ordered)}
    return np.fromiter((number[k] for k in keys), "int64", count=len(keys)), len(ordered)


def _check_resamples(n_resamples):
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ValueError(f"Expected n_resamples to be a positive integer. Received: n_resamples={n_resamples!r}")
    return int(n_resamples)


def _draws(n_groups, n_resamples, seed):
    """(n_resamples, n_groups) group numbers drawn uniformly with replacement (the one source of randomness)."""
    rng = np.random.default_rng(np.random.SeedSequence([0x1B007, int(seed)]))
    return rng.integers(0, n_groups, size=(n_resamples, n_groups))


def _group_counts(n_groups, n_resamples, seed):
    """(n_resamples, n_groups) int64 multiplicity of every group in every resample."""
    draws = _draws(n_groups, n_resamples, seed)
    flat = (draws + n_groups * np.arange(n_resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=n_resamples * n_groups).reshape(n_resamples, n_groups)


def bootstrap_indices(groups, n_resamples=N_RESAMPLES, seed=0):
    """Row indices of a seeded cluster bootstrap: each resample draws len(unique groups) groups with
    replacement and takes all rows of every drawn group (once per draw).

    Args:
        groups: (N,) group id of every row (e.g. the study); hashable values, or (N, 2) rows of ids.
        n_resamples: number of resamples.
        seed: seed of the draws; the same (groups, seed) always give the same resamples, and are the
            resamples every function of this module uses with that seed.

    Returns:
        list of ``n_resamples`` int64 row-index arrays (a drawn group's rows in input order, the drawn
        groups in draw order).
    """
    index, n_groups = _group_index(groups)
    rows = np.split(np.argsort(index, kind="stable"), np.cumsum(np.bincount(index, minlength=n_groups))[:-1])
    return [np.concatenate([rows[g] for g in draw]) for draw in _draws(n_groups, _check_resamples(n_resamples), seed)]


# === AUROC with multiplicity weights, vectorised over resamples ===

class _SortedLabel:
    """One label's rows sorted by score, with tie levels: the per-label work shared by all resamples."""

    def __init__(self, y, s):
        self.order = np.argsort(s, kind="stable")
        s_sorted = s[self.order]
        positive = y[self.order] > 0.5
        self.negative = (~positive).astype("float64")
        self.pos_cols = np.flatnonzero(positive)
        new_level = np.concatenate([[True], s_sorted[1:] != s_sorted[:-1]])
        level = np.cumsum(new_level) - 1  # tie level of every sorted position
        starts = np.flatnonzero(new_level)
        ends = np.append(starts[1:], len(s))
        self.below = starts[level[self.pos_cols]]  # first position of each positive's level
        self.upto = ends[level[self.pos_cols]]  # one past its last position

    def auroc(self, weights):
        """(b,) weighted AUROC for (b, N) weights in the input row order; NaN where a class has no weight."""
        w = weights[:, self.order]
        cum = np.zeros((len(w), w.shape[1] + 1))
        np.cumsum(w * self.negative, axis=1, out=cum[:, 1:])
        below = cum[:, self.below]
        ties = cum[:, self.upto] - below
        w_pos = w[:, self.pos_cols]
        numerator = np.sum(w_pos * (below + 0.5 * ties), axis=1)
        total_pos, total_neg = w_pos.sum(axis=1), cum[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((total_pos > 0) & (total_neg > 0), numerator / (total_pos * total_neg), np.nan)


def _as_matrix(name, values, n_rows=None):
    values = np.asarray(values, dtype="float64")
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or (n_rows is not None and len(values) != n_rows):
        raise ValueError(f"Expected {name} of shape (N,) or (N, K) with N = {n_rows}. Received: shape {values.shape}")
    return values


def _check_inputs(labels, scores_list, groups):
    labels = _as_matrix("labels", labels)
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("Expected labels of 0 and 1 only. Received: other values")
    out = []
    for scores in scores_list:
        scores = _as_matrix("scores", scores, len(labels))
        if scores.shape != labels.shape:
            raise ValueError(f"Expected labels and scores of the same shape. Received: {labels.shape}, {scores.shape}")
        if not np.all(np.isfinite(scores)):
            raise ValueError("Expected finite scores. Received: NaN or infinity")
        out.append(scores)
    index, n_groups = _group_index(groups)
    if len(index) != len(labels):
        raise ValueError(f"Expected one group id per row ({len(labels)}). Received: {len(index)}")
    return labels, out, index, n_groups


def _defined(labels):
    """(K,) bool: the labels with both classes in the whole test set (the point estimate's label set)."""
    positives = labels.sum(axis=0)
    return (positives > 0) & (positives < len(labels))


def resampled_auroc(labels, scores, groups, n_resamples=N_RESAMPLES, seed=0):
    """Per-label AUROC on the test set and on every cluster-bootstrap resample.

    Args:
        labels: (N,) or (N, K) 0/1. scores: same shape. groups: (N,) group (study) of every row.
        n_resamples, seed: as ``bootstrap_indices`` (the same resamples).

    Returns:
        ``(point (K,), resampled (n_resamples, K))`` float64; NaN for a label with a single class in the
        test set (every resample) or in that resample.
    """
    [(point, resampled)], _ = _resampled_aurocs(labels, [scores], groups, n_resamples, seed)
    return point, resampled


def _resampled_aurocs(labels, scores_list, groups, n_resamples, seed):
    """[(point (K,), resampled (B, K)) per scores], and n_groups: one set of resamples for every model."""
    n_resamples = _check_resamples(n_resamples)
    labels, scores_list, index, n_groups = _check_inputs(labels, scores_list, groups)
    counts = _group_counts(n_groups, n_resamples, seed).astype("float64")  # (B, G)
    defined = _defined(labels)
    n_rows, n_labels = labels.shape
    block = max(1, _BLOCK_ELEMENTS // max(n_rows, 1))
    results = []
    for scores in scores_list:
        point = np.full(n_labels, np.nan)
        resampled = np.full((n_resamples, n_labels), np.nan)
        for k in np.flatnonzero(defined):
            label = _SortedLabel(labels[:, k], scores[:, k])
            point[k] = label.auroc(np.ones((1, n_rows)))[0]
            for start in range(0, n_resamples, block):
                resampled[start:start + block, k] = label.auroc(counts[start:start + block][:, index])
        results.append((point, resampled))
    return results, n_groups


def _macro(values):
    """Mean over the finite entries of the last axis; NaN where there is none (no warning)."""
    finite = np.isfinite(values)
    count = finite.sum(axis=-1)
    total = np.where(finite, values, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _percentiles(values, confidence):
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan, 0
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high), int(len(values))


def _p_value(differences):
    """Two-sided bootstrap p-value with the +1 correction (module docstring)."""
    d = differences[np.isfinite(differences)]
    if not len(d):
        return math.nan
    below, above = (1 + np.sum(d <= 0)) / (len(d) + 1), (1 + np.sum(d >= 0)) / (len(d) + 1)
    return float(min(1.0, 2.0 * min(below, above)))


def _check_confidence(confidence):
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"Expected 0 < confidence < 1. Received: confidence={confidence!r}")
    return float(confidence)


def _names(label_names, n_labels):
    if label_names is None:
        return [str(k) for k in range(n_labels)]
    label_names = [str(n) for n in label_names]
    if len(label_names) != n_labels:
        raise ValueError(f"Expected {n_labels} label names. Received: {len(label_names)}")
    return label_names


def _interval(point, resampled, n_groups, confidence, paired=False):
    low, high, n = _percentiles(resampled, confidence)
    return Interval(estimate=float(point), low=low, high=high, n_resamples=n, n_groups=n_groups,
                    confidence=confidence, p_value=_p_value(resampled) if paired else None)


def _macro_interval(points, resamples, n_groups, confidence, names, paired):
    """The macro interval (of a difference when ``paired``) with per-label intervals, from per-label arrays.

    ``points``/``resamples``: tuples of one (K,) / (B, K) array per model (two when paired)."""
    defined = np.isfinite(points[0])
    if paired:
        point_values, resampled_values = points[0] - points[1], resamples[0] - resamples[1]
        macro_point = _macro(points[0]) - _macro(points[1])
        macro_resampled = _macro(resamples[0]) - _macro(resamples[1])
    else:
        point_values, resampled_values = points[0], resamples[0]
        macro_point, macro_resampled = _macro(points[0]), _macro(resamples[0])
    kept = np.isfinite(macro_resampled)
    incomplete = int(np.sum(np.any(~np.isfinite(resamples[0][:, defined]), axis=1) & kept))
    per_label = {name: (_interval(point_values[k], resampled_values[:, k], n_groups, confidence, paired)
                        if defined[k] else None) for k, name in enumerate(names)}
    macro = _interval(macro_point, macro_resampled, n_groups, confidence, paired)
    return dataclasses.replace(macro, n_incomplete=incomplete, per_label=per_label)


def auroc_interval(labels, scores, groups, label_names=None, n_resamples=N_RESAMPLES, seed=0,
                   confidence=CONFIDENCE):
    """Macro AUROC with its cluster-bootstrap percentile interval, and one interval per label.

    Args:
        labels: (N,) or (N, K) 0/1 ground truth. scores: the same shape. groups: (N,) group (study) of
            every row (rows of a group are resampled together).
        label_names: K names for ``per_label`` (default "0", "1", ...).
        n_resamples: bootstrap resamples (1,000). seed: seed of the resamples. confidence: 0.95.

    Returns:
        ``Interval`` of the macro AUROC (mean over the labels with both classes in the test set; see the
        module docstring for resamples in which a label has a single class), with ``per_label``
        ``{name: Interval | None}``. ``estimate`` equals ``kmedssl.eval.macro_auroc(per_label_auroc(...))``.
    """
    confidence = _check_confidence(confidence)
    [(point, resampled)], n_groups = _resampled_aurocs(labels, [scores], groups, n_resamples, seed)
    return _macro_interval((point,), (resampled,), n_groups, confidence, _names(label_names, len(point)), False)


def paired_difference(labels, scores_a, scores_b, groups, label_names=None, n_resamples=N_RESAMPLES, seed=0,
                      confidence=CONFIDENCE):
    """Macro AUROC of model a minus model b on the same test rows and the same resampled studies.

    Args:
        labels: (N,) or (N, K) 0/1. scores_a, scores_b: the two models' scores for the same rows, in the
            same order. groups: (N,) group (study) of every row. label_names, n_resamples, seed,
            confidence: as ``auroc_interval``.

    Returns:
        ``Interval`` of the difference (a - b) with its percentile interval and two-sided bootstrap
        ``p_value`` (module docstring), and ``per_label`` differences with their own intervals and p-values.
    """
    confidence = _check_confidence(confidence)
    results, n_groups = _resampled_aurocs(labels, [scores_a, scores_b], groups, n_resamples, seed)
    (point_a, resampled_a), (point_b, resampled_b) = results
    return _macro_interval((point_a, point_b), (resampled_a, resampled_b), n_groups, confidence,
                           _names(label_names, len(point_a)), True)


__all__ = ["CONFIDENCE", "Interval", "N_RESAMPLES", "auroc_interval", "bootstrap_indices", "format_interval",
           "paired_difference", "resampled_auroc"]
