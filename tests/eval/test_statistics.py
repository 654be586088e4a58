"""Repeated k-fold on fixed group folds and the paired Wilcoxon signed-rank test (paper 001 §4.2)."""

import itertools

import numpy as np
import pytest
from scipy import stats

from kmedssl.eval.statistics import compare_methods, repeated_kfold_indices, summarize_repeats

pytestmark = pytest.mark.backend_free


def subjects():
    """37 samples from 11 subjects with 1 to 6 images each."""
    sizes = [1, 6, 2, 5, 3, 4, 4, 3, 5, 2, 2]
    return np.repeat([f"subject-{i}" for i in range(len(sizes))], sizes)


def test_folds_partition_the_samples_and_never_split_a_group():
    groups = subjects()
    folds, seeds = repeated_kfold_indices(groups, n_splits=5, n_repeats=10, seed=3)
    assert len(folds) == 5 and seeds == list(range(3, 13))
    tests = np.concatenate([test for _, test in folds])
    np.testing.assert_array_equal(np.sort(tests), np.arange(len(groups)))  # every index once
    for train, test in folds:
        assert len(test) > 0
        assert set(train).isdisjoint(test) and len(train) + len(test) == len(groups)
        assert set(groups[train]).isdisjoint(groups[test])  # a subject is never split
    sizes = [len(test) for _, test in folds]
    assert max(sizes) - min(sizes) <= 6  # balanced up to the largest subject


def test_folds_are_fixed_by_the_seed():
    groups = subjects()
    first, _ = repeated_kfold_indices(groups, n_splits=4, seed=0)
    again, _ = repeated_kfold_indices(groups, n_splits=4, seed=0, n_repeats=2)
    other, _ = repeated_kfold_indices(groups, n_splits=4, seed=1)
    for (a_train, a_test), (b_train, b_test) in zip(first, again):  # repeats do not change the folds
        np.testing.assert_array_equal(a_train, b_train)
        np.testing.assert_array_equal(a_test, b_test)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, other))


def test_kfold_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_splits"):
        repeated_kfold_indices(["a", "a", "b"], n_splits=3)
    with pytest.raises(ValueError, match="n_repeats"):
        repeated_kfold_indices(subjects(), n_repeats=0)


def test_summarize_repeats_averages_the_folds():
    scores = np.asarray([[0.5, 0.7, 0.9], [0.6, 0.6, 0.9]])
    np.testing.assert_allclose(summarize_repeats(scores), [0.7, 0.7])
    with pytest.raises(ValueError, match="finite"):
        summarize_repeats([[0.5, np.nan]])
    with pytest.raises(ValueError, match="n_repeats, n_splits"):
        summarize_repeats([0.5, 0.6])


def exact_wilcoxon(d):
    """Hand-written oracle: W = min(W+, W-) over distinct non-zero |d|, two-sided p by enumerating all 2^n
    sign assignments."""
    d = np.asarray(d, "float64")
    d = d[d != 0]
    ranks = stats.rankdata(np.abs(d))
    w_plus, w_minus = ranks[d > 0].sum(), ranks[d < 0].sum()
    w = min(w_plus, w_minus)
    sums = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product((0, 1), repeat=len(d))]
    tail = np.mean([s <= w for s in sums])
    return w, min(1.0, 2 * tail)


def test_wilcoxon_hand_computed_case():
    # d = a - b = [1, -2, 3, 4, 5]: ranks 1..5, W- = 2, W+ = 13; W <= 2 for {}, {1}, {2}: p = 2 * 3 / 32.
    result = compare_methods([2.0, 0.0, 4.0, 6.0, 8.0], [1.0, 2.0, 1.0, 2.0, 3.0])
    assert result == {"mean_a": 4.0, "mean_b": 1.8, "statistic": 2.0, "p_value": pytest.approx(0.1875)}


def test_wilcoxon_matches_scipy_and_the_enumeration_oracle():
    rng = np.random.default_rng(0)
    a = 0.80 + 0.02 * rng.normal(size=10)  # ten per-repeat summary AUCs of two methods
    b = a - 0.01 + 0.015 * rng.normal(size=10)
    result = compare_methods(a, b)
    reference = stats.wilcoxon(a, b, alternative="two-sided")
    w, p = exact_wilcoxon(a - b)
    assert result["statistic"] == pytest.approx(reference.statistic) == pytest.approx(w)
    assert result["p_value"] == pytest.approx(reference.pvalue, rel=1e-12) == pytest.approx(p, rel=1e-12)
    assert result["mean_a"] == pytest.approx(a.mean()) and result["mean_b"] == pytest.approx(b.mean())
    assert compare_methods(b, a)["p_value"] == pytest.approx(result["p_value"])  # two-sided: symmetric


def test_wilcoxon_identical_scores_and_bad_inputs():
    assert compare_methods([0.7, 0.8, 0.9], [0.7, 0.8, 0.9]) == {
        "mean_a": pytest.approx(0.8), "mean_b": pytest.approx(0.8), "statistic": 0.0, "p_value": 1.0}
    with pytest.raises(ValueError, match="same length"):
        compare_methods([0.7, 0.8], [0.7, 0.8, 0.9])
    with pytest.raises(ValueError, match="finite"):
        compare_methods([0.7, np.nan], [0.7, 0.8])
