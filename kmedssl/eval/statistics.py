"""Repeated k-fold on fixed folds and paired Wilcoxon signed-rank tests between methods (paper 001 §4.2).

Paper 001 §4.2: every method is evaluated on the same fixed 5-fold partition; the whole 5-fold procedure is
repeated 10 times with the splits unchanged (only the training seed varies); each repeat's fold-wise AUCs
are averaged into one summary value, and two methods are compared by a two-sided Wilcoxon signed-rank test
over their 10 paired summary values (Tables 4-5).
"""

import numpy as np
from scipy import stats


def repeated_kfold_indices(groups, n_splits=5, n_repeats=10, seed=0):
    """One fixed group k-fold partition, reused by every repeat, and one training seed per repeat.

    Groups (subjects) are shuffled with ``seed``, ordered by size (largest first, ties in shuffled order)
    and each is assigned to the fold with the fewest samples so far, so folds are balanced and no group
    is split between training and test.

    Args:
        groups: (N,) group id of every sample (e.g. the subject); hashable values.
        n_splits: number of folds (2 <= n_splits <= number of groups).
        n_repeats: number of repeats of the whole k-fold procedure.
        seed: seed of the partition.

    Returns:
        ``(folds, repeat_seeds)``: ``folds`` a list of ``n_splits`` ``(train_idx, test_idx)`` sorted int64
        index arrays (the same folds serve every repeat); ``repeat_seeds`` the ``n_repeats`` training seeds
        ``seed + r``, ``r = 0 .. n_repeats - 1``.
    """
    groups = np.asarray(groups)
    if groups.ndim != 1 or len(groups) == 0:
        raise ValueError(f"Expected a non-empty 1-D array of group ids. Received: shape {groups.shape}")
    names, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    if not 2 <= n_splits <= len(names):
        raise ValueError(
            f"Expected 2 <= n_splits <= {len(names)} (the number of groups). Received: n_splits={n_splits}"
        )
    if n_repeats < 1:
        raise ValueError(f"Expected n_repeats >= 1. Received: n_repeats={n_repeats}")
    shuffled = np.random.default_rng(seed).permutation(len(names))
    order = shuffled[np.argsort(-sizes[shuffled], kind="stable")]  # largest first, ties shuffled
    fold_of_group, fold_sizes = np.empty(len(names), "int64"), np.zeros(n_splits, "int64")
    for group in order:
        fold = int(np.argmin(fold_sizes))
        fold_of_group[group] = fold
        fold_sizes[fold] += sizes[group]
    fold_of_sample = fold_of_group[inverse]  # (N,)
    folds = [(np.flatnonzero(fold_of_sample != k), np.flatnonzero(fold_of_sample == k)) for k in range(n_splits)]
    return folds, [seed + r for r in range(n_repeats)]


def summarize_repeats(fold_scores):
    """Per-repeat summary values: the mean over folds of ``fold_scores`` (n_repeats, n_splits) -> (n_repeats,)."""
    fold_scores = np.asarray(fold_scores, "float64")
    if fold_scores.ndim != 2 or 0 in fold_scores.shape:
        raise ValueError(
            f"Expected fold scores of shape (n_repeats, n_splits). Received: shape {fold_scores.shape}"
        )
    if not np.all(np.isfinite(fold_scores)):
        raise ValueError("Expected finite fold scores. Received: NaN or inf (a fold without a macro AUROC?)")
    return fold_scores.mean(axis=1)


def compare_methods(scores_a, scores_b):
    """Paired two-sided Wilcoxon signed-rank test between two methods' per-repeat summary values.

    With ``d_r = a_r - b_r`` (zero differences dropped), ranks ``R_r`` of ``|d_r|`` (ties: mean rank),
    ``W+ = sum_{d_r > 0} R_r`` and ``W- = sum_{d_r < 0} R_r``, the statistic is ``min(W+, W-)``;
    the p-value is SciPy's ``method="auto"``: exact for n <= 50 without ties or zeros, exhaustive sign
    permutations for n <= 13 with them, the normal approximation otherwise.

    Args:
        scores_a, scores_b: (n_repeats,) paired summary values (e.g. ``summarize_repeats`` outputs).

    Returns:
        dict ``mean_a``, ``mean_b``, ``statistic`` and ``p_value`` (floats). When every difference is zero
        there is no evidence of a difference: ``statistic`` 0 and ``p_value`` 1.
    """
    a, b = np.asarray(scores_a, "float64"), np.asarray(scores_b, "float64")
    if a.ndim != 1 or a.shape != b.shape or len(a) < 2:
        raise ValueError(
            f"Expected two 1-D arrays of paired scores of the same length >= 2. Received: shapes {a.shape}, "
            f"{b.shape}"
        )
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("Expected finite scores. Received: NaN or inf")
    result = {"mean_a": float(a.mean()), "mean_b": float(b.mean())}
    if np.all(a == b):
        return {**result, "statistic": 0.0, "p_value": 1.0}
    test = stats.wilcoxon(a, b, alternative="two-sided")
    return {**result, "statistic": float(test.statistic), "p_value": float(test.pvalue)}
