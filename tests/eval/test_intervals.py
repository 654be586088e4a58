"""Cluster-bootstrap intervals for AUROC and paired differences (SPEC §5, kmedssl.eval.intervals).

The references here are independent of the module: brute-force pair counting, scikit-learn on explicitly
resampled rows, and DeLong's variance written from its paper (DeLong, DeLong & Clarke-Pearson 1988).
"""

import itertools
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from kmedssl.eval.intervals import (
    Interval,
    _SortedLabel,
    auroc_interval,
    bootstrap_indices,
    format_interval,
    paired_difference,
    resampled_auroc,
)
from kmedssl.eval.metrics import macro_auroc, per_label_auroc

pytestmark = pytest.mark.backend_free


def pair_auroc(labels, scores, weights=None):
    """Brute-force Mann-Whitney AUROC over all (positive, negative) pairs, ties 1/2, rows weighted."""
    weights = np.ones(len(labels)) if weights is None else np.asarray(weights, float)
    num = den = 0.0
    for i, j in itertools.product(range(len(labels)), repeat=2):
        if labels[i] == 1 and labels[j] == 0:
            w = weights[i] * weights[j]
            num += w * (1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0)
            den += w
    return num / den if den else math.nan


def random_data(rng, n_groups=120, n_labels=3, shift=0.8, ties=True):
    sizes = rng.integers(1, 4, n_groups)
    groups = np.repeat([f"study-{g:04d}" for g in range(n_groups)], sizes)
    labels = (rng.random((n_groups, n_labels)) < 0.3).astype(float)[np.repeat(np.arange(n_groups), sizes)]
    scores = shift * labels + rng.normal(size=labels.shape)
    return labels, (np.round(scores, 1) if ties else scores), groups


# === Hand-computed cases ===

def test_weighted_auroc_matches_hand_counts():
    # Studies A (positive, 0.9), B (negative, 0.1), C (positive, 0.4), D (negative, 0.6).
    y, s = np.array([1.0, 0.0, 1.0, 0.0]), np.array([0.9, 0.1, 0.4, 0.6])
    label = _SortedLabel(y, s)
    weights = np.array([[1, 1, 1, 1],  # A>B, A>D, C>B, C<D: 3/4
                        [2, 0, 1, 1],  # {A, A, C, D}: A>D twice, C<D: 2/3
                        [0, 1, 1, 2],  # {B, C, D, D}: C>B, C<D twice: 1/3
                        [1, 0, 0, 3],  # {A, D, D, D}: 1
                        [3, 0, 1, 0]], float)  # no negative: undefined
    np.testing.assert_allclose(label.auroc(weights)[:4], [3 / 4, 2 / 3, 1 / 3, 1.0], rtol=0, atol=1e-15)
    assert np.isnan(label.auroc(weights)[4])
    # Ties count 1/2: positives 0.5, 0.7; negatives 0.5, 0.5 -> (0.5 + 0.5 + 1 + 1) / 4.
    tied = _SortedLabel(np.array([1.0, 1.0, 0.0, 0.0]), np.array([0.5, 0.7, 0.5, 0.5]))
    assert tied.auroc(np.ones((1, 4)))[0] == 0.75
    assert tied.auroc(np.array([[2.0, 0.0, 1.0, 3.0]]))[0] == 0.5  # only the tied positive, twice


def test_bootstrap_distribution_matches_exact_enumeration():
    # 4 studies, one row each: every resample is one of the 4^4 equally likely ordered draws.
    y, s = np.array([1.0, 0.0, 1.0, 0.0]), np.array([0.9, 0.1, 0.4, 0.6])
    exact = []
    for draw in itertools.product(range(4), repeat=4):
        counts = np.bincount(draw, minlength=4)
        exact.append(pair_auroc(y, s, counts))
    exact = np.array(exact)
    possible = set(np.round(exact[np.isfinite(exact)], 12))
    # (ab + ad + cb) / ((a + c)(b + d)) for multiplicities a + b + c + d = 4
    assert possible == {round(v, 12) for v in (0.0, 1 / 3, 0.5, 2 / 3, 0.75, 1.0)}
    n = 20_000
    point, resampled = resampled_auroc(y, s, groups=["A", "B", "C", "D"], n_resamples=n, seed=1)
    assert point[0] == 0.75
    values = resampled[:, 0]
    assert set(np.round(values[np.isfinite(values)], 12)) <= possible
    p_undefined = np.mean(np.isnan(exact))  # 2 / 16: all four draws from one class
    assert p_undefined == 0.125
    assert abs(np.mean(np.isnan(values)) - p_undefined) < 4 * math.sqrt(p_undefined * (1 - p_undefined) / n)
    defined = exact[np.isfinite(exact)]
    mean, se = np.mean(defined), np.std(defined) / math.sqrt(n * (1 - p_undefined))
    assert abs(np.nanmean(values) - mean) < 4 * se


def test_bootstrap_indices_take_whole_studies_and_are_seeded():
    groups = np.array(["b", "a", "b", "c", "a", "d", "b"])  # a: 2 rows, b: 3, c: 1, d: 1
    first = bootstrap_indices(groups, n_resamples=50, seed=3)
    again = bootstrap_indices(groups, n_resamples=50, seed=3)
    other = bootstrap_indices(groups, n_resamples=50, seed=4)
    assert len(first) == 50
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(len(a) == len(b) and np.array_equal(a, b) for a, b in zip(first, other))
    sizes = {"a": 2, "b": 3, "c": 1, "d": 1}
    for rows in first:
        drawn = groups[rows]
        counts = {g: int(np.sum(drawn == g)) for g in sizes}
        assert all(counts[g] % sizes[g] == 0 for g in sizes)  # every row of a drawn study, per draw
        assert sum(counts[g] // sizes[g] for g in sizes) == 4  # as many draws as studies
    # The resamples depend on the studies, not on the order of the rows.
    perm = np.random.default_rng(0).permutation(len(groups))
    shuffled = bootstrap_indices(groups[perm], n_resamples=50, seed=3)
    for a, b in zip(first, shuffled):
        assert sorted(groups[a]) == sorted(groups[perm][b])


# === Agreement with scikit-learn ===

def test_point_estimate_equals_sklearn_and_metrics(rng):
    labels, scores, groups = random_data(rng, n_labels=4)
    labels[:, 3] = 0.0  # a single class in the test set: None, left out of the macro
    names = ["a", "b", "c", "d"]
    result = auroc_interval(labels, scores, groups, label_names=names, n_resamples=50)
    for k, name in enumerate(names[:3]):
        assert result.per_label[name].estimate == pytest.approx(roc_auc_score(labels[:, k], scores[:, k]), abs=1e-12)
    assert result.per_label["d"] is None and result.to_dict()["per_label"]["d"] is None
    assert result.estimate == pytest.approx(macro_auroc(per_label_auroc(labels, scores, names)), abs=1e-12)


def test_resampled_auroc_equals_sklearn_on_the_explicitly_resampled_rows(rng):
    labels, scores, groups = random_data(rng, n_groups=60, n_labels=2)
    point, resampled = resampled_auroc(labels, scores, groups, n_resamples=200, seed=7)
    macros = []
    for b, rows in enumerate(bootstrap_indices(groups, n_resamples=200, seed=7)):
        values = []
        for k in range(2):
            y = labels[rows, k]
            if 0 < y.sum() < len(y):
                values.append(roc_auc_score(y, scores[rows, k]))
                assert resampled[b, k] == pytest.approx(values[-1], abs=1e-12)
            else:
                assert np.isnan(resampled[b, k])
        macros.append(np.mean(values))
    result = auroc_interval(labels, scores, groups, n_resamples=200, seed=7)
    low, high = np.percentile(macros, [2.5, 97.5])
    assert (result.low, result.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert result.n_resamples == 200 and result.n_groups == 60 and result.n_incomplete == 0


def test_a_label_with_one_class_in_a_resample_is_left_out_of_that_macro(rng):
    labels, scores, groups = random_data(rng, n_groups=40, n_labels=2)
    labels[:, 1] = 0.0
    labels[5, 1] = 1.0  # one positive study row: absent from about 1/e of the resamples
    result = auroc_interval(labels, scores, groups, n_resamples=300, seed=2)
    macros, incomplete = [], 0
    for rows in bootstrap_indices(groups, n_resamples=300, seed=2):
        values = [roc_auc_score(labels[rows, k], scores[rows, k]) for k in range(2) if 0 < labels[rows, k].sum()]
        incomplete += len(values) < 2
        macros.append(np.mean(values))
    assert 60 < incomplete < 160 and result.n_incomplete == incomplete
    assert result.low == pytest.approx(np.percentile(macros, 2.5), abs=1e-12)
    assert result.high == pytest.approx(np.percentile(macros, 97.5), abs=1e-12)
    assert result.per_label["1"].n_resamples == 300 - incomplete


# === Against DeLong's variance ===

def delong_se(labels, scores):
    """DeLong et al. (1988): structural components V10 (per positive) and V01 (per negative) of the
    Mann-Whitney statistic; Var = S10 / m + S01 / n with S the sample variances (m positives, n negatives)."""
    x, y = scores[labels == 1], scores[labels == 0]
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return math.sqrt(np.var(v10, ddof=1) / len(x) + np.var(v01, ddof=1) / len(y))


def test_bootstrap_standard_error_agrees_with_delong(rng):
    labels = np.r_[np.ones(150), np.zeros(250)]
    scores = np.r_[rng.normal(1.0, 1.0, 150), rng.normal(0.0, 1.0, 250)]
    _, resampled = resampled_auroc(labels, scores, groups=np.arange(400), n_resamples=2000, seed=0)
    bootstrap_se, reference = np.std(resampled[:, 0], ddof=1), delong_se(labels, scores)
    assert abs(bootstrap_se / reference - 1.0) < 0.15


def test_percentile_interval_covers_the_true_auroc(rng):
    mu, n, covered = 1.0, 150, 0
    truth = stats.norm.cdf(mu / math.sqrt(2.0))  # binormal, unit variances
    for draw in range(200):
        labels = np.r_[np.ones(n), np.zeros(n)]
        scores = np.r_[rng.normal(mu, 1.0, n), rng.normal(0.0, 1.0, n)]
        result = auroc_interval(labels, scores, np.arange(2 * n), n_resamples=400, seed=draw)
        covered += result.low <= truth <= result.high
    assert 0.88 <= covered / 200 <= 0.995


# === Grouping ===

def test_duplicated_rows_widen_a_row_bootstrap_not_the_cluster_one(rng):
    labels = (rng.random(200) < 0.4).astype(float)
    scores = labels + rng.normal(size=200)
    groups = np.arange(200)
    base = auroc_interval(labels, scores, groups, seed=5)
    tripled = np.repeat(np.arange(200), 3)  # every study holds 3 identical rows
    cluster = auroc_interval(labels[tripled], scores[tripled], groups[tripled], seed=5)
    rows = auroc_interval(labels[tripled], scores[tripled], np.arange(600), seed=5)
    assert cluster.estimate == pytest.approx(base.estimate, abs=1e-12)
    assert (cluster.low, cluster.high) == (pytest.approx(base.low, abs=1e-12), pytest.approx(base.high, abs=1e-12))
    ratio = (rows.high - rows.low) / (cluster.high - cluster.low)
    assert 0.4 < ratio < 0.75  # about 1 / sqrt(3): the row bootstrap pretends there are 3x more studies


def test_groups_may_be_tuples_of_ids(rng):
    labels, scores, groups = random_data(rng, n_groups=30, n_labels=1)
    pairs = [("subject", g) for g in groups]  # sorts as the study ids do
    a = auroc_interval(labels, scores, pairs, n_resamples=100)
    b = auroc_interval(labels, scores, np.array(pairs), n_resamples=100)
    c = auroc_interval(labels, scores, groups, n_resamples=100)
    assert a == b == c  # same studies in the same sorted order


# === Paired differences ===

def test_identical_models_differ_by_exactly_zero_with_p_one(rng):
    labels, scores, groups = random_data(rng)
    result = paired_difference(labels, scores, scores.copy(), groups)
    assert (result.estimate, result.low, result.high, result.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert all((v.estimate, v.low, v.high, v.p_value) == (0.0, 0.0, 0.0, 1.0) for v in result.per_label.values())
    assert format_interval(result) == "+0.000 [+0.000, +0.000], p = 1.000"


def test_a_clearly_better_model_is_significant(rng):
    labels, scores, groups = random_data(rng, n_groups=300, ties=False)
    worse = 0.3 * labels + rng.normal(size=labels.shape)
    result = paired_difference(labels, scores, worse, groups)
    assert result.p_value < 0.01 and result.low > 0.0 and result.p_value == pytest.approx(2 / 1001)
    a = auroc_interval(labels, scores, groups)
    b = auroc_interval(labels, worse, groups)
    assert result.estimate == pytest.approx(a.estimate - b.estimate, abs=1e-12)
    reverse = paired_difference(labels, worse, scores, groups)
    assert reverse.estimate == pytest.approx(-result.estimate, abs=1e-12) and reverse.high < 0
    assert reverse.p_value == result.p_value


def test_paired_resamples_are_shared_and_the_p_value_follows_its_definition(rng):
    labels, scores, groups = random_data(rng, n_groups=50, shift=0.5)
    other = 0.45 * labels + rng.normal(size=labels.shape)
    result = paired_difference(labels, scores, other, groups, n_resamples=300, seed=9)
    _, a = resampled_auroc(labels, scores, groups, n_resamples=300, seed=9)
    _, b = resampled_auroc(labels, other, groups, n_resamples=300, seed=9)
    d = np.nanmean(a, axis=1) - np.nanmean(b, axis=1)
    expected = min(1.0, 2 * min((1 + np.sum(d <= 0)) / 301, (1 + np.sum(d >= 0)) / 301))
    assert result.p_value == pytest.approx(expected, abs=1e-12)
    assert result.low == pytest.approx(np.percentile(d, 2.5), abs=1e-12)


# === Formatting and validation ===

def test_format_interval():
    value = Interval(estimate=0.7123, low=0.6881, high=0.7349, n_resamples=1000, n_groups=2000)
    assert format_interval(value) == str(value) == "0.712 [0.688, 0.735]"
    assert format_interval(value.to_dict()) == "0.712 [0.688, 0.735]"
    diff = Interval(estimate=0.0312, low=0.0121, high=0.0498, n_resamples=1000, n_groups=2000, p_value=0.001998)
    assert format_interval(diff) == "+0.031 [+0.012, +0.050], p = 0.002"
    neg = Interval(estimate=-0.0104, low=-0.0301, high=0.0099, n_resamples=1000, n_groups=2000, p_value=0.3207)
    assert format_interval(neg.to_dict()) == "-0.010 [-0.030, +0.010], p = 0.321"
    tiny = Interval(estimate=0.2, low=0.1, high=0.3, n_resamples=9999, n_groups=9, p_value=0.0002)
    assert format_interval(tiny) == "+0.200 [+0.100, +0.300], p < 0.001"
    assert format_interval(Interval(math.nan, math.nan, math.nan, 0, 3)) == "n/a [n/a, n/a]"
    assert value.to_dict() == {"estimate": 0.7123, "low": 0.6881, "high": 0.7349, "confidence": 0.95,
                               "n_resamples": 1000, "n_groups": 2000, "n_incomplete": 0}


def test_invalid_inputs_are_rejected(rng):
    labels, scores, groups = random_data(rng, n_groups=10, n_labels=2)
    with pytest.raises(ValueError, match="0 and 1"):
        auroc_interval(labels * 2, scores, groups)
    with pytest.raises(ValueError, match="same shape"):
        auroc_interval(labels, scores[:, :1], groups)
    with pytest.raises(ValueError, match="finite"):
        auroc_interval(labels, np.where(labels > 0, np.nan, scores), groups)
    with pytest.raises(ValueError, match="one group id per row"):
        auroc_interval(labels, scores, groups[:-1])
    with pytest.raises(ValueError, match="n_resamples"):
        auroc_interval(labels, scores, groups, n_resamples=0)
    with pytest.raises(ValueError, match="confidence"):
        paired_difference(labels, scores, scores, groups, confidence=95)
    with pytest.raises(ValueError, match="label names"):
        auroc_interval(labels, scores, groups, label_names=["only one"])
