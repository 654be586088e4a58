"""Per-subgroup AUROC: groups by sex and age band, unknowns skipped, single-class labels None, largest gap."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from kmedssl.data.records import ImageRecord
from kmedssl.eval.subgroups import subgroup_auroc

pytestmark = pytest.mark.backend_free

NAMES = ("effusion", "nodule")


def record(i, sex, age, labels):
    return ImageRecord(f"i{i}", f"p{i}", f"s{i}", "PA", "XR", "chest", labels, sex, age)


def cohort():
    """24 records: 12 F / 10 M / 2 unknown sex; ages spread over three bands, two unknown; random labels."""
    rng = np.random.default_rng(0)
    sexes = ["F"] * 12 + ["M"] * 10 + ["", ""]
    ages = [25, 33, 45, 52, 61, 70, 38, 58, 64, 80, math.nan, 41] * 2
    labels = rng.integers(0, 2, (24, 2)).astype(float)
    labels[:12, 1] = 1.0  # "nodule" has one class among the women
    labels[[0, 12], 0], labels[[1, 13], 0] = 0.0, 1.0  # both classes of "effusion" in both sexes
    records = [record(i, sexes[i], ages[i], tuple(labels[i])) for i in range(24)]
    return records, labels, rng.random((24, 2))


def sklearn_group(labels, scores, members):
    """Oracle: per-label AUROC with sklearn on the members (None with one class) and their mean."""
    result = {}
    for k, name in enumerate(NAMES):
        y = labels[members, k]
        result[name] = roc_auc_score(y, scores[members, k]) if 0 < y.sum() < len(y) else None
    present = [v for v in result.values() if v is not None]
    return result, (np.mean(present) if present else math.nan)


def test_groups_match_sklearn_and_skip_unknowns():
    records, labels, scores = cohort()
    result = subgroup_auroc(records, scores, NAMES)
    sexes = np.asarray([r.sex for r in records])
    ages = np.asarray([r.age for r in records])
    assert list(result["sex"]) == ["F", "M"]
    assert list(result["age"]) == ["0-40", "40-60", "60-200"]
    expected_members = {
        ("sex", "F"): sexes == "F", ("sex", "M"): sexes == "M",
        ("age", "0-40"): ages < 40, ("age", "40-60"): (ages >= 40) & (ages < 60), ("age", "60-200"): ages >= 60,
    }
    for (attribute, group), members in expected_members.items():
        per_label, macro = sklearn_group(labels, scores, members)
        report = result[attribute][group]
        assert report["n"] == members.sum()
        for name in NAMES:
            assert report[name] == (None if per_label[name] is None else pytest.approx(per_label[name]))
        assert report["macro"] == pytest.approx(macro)
    assert result["sex"]["F"]["nodule"] is None  # single class among the women
    assert result["sex"]["F"]["macro"] == pytest.approx(result["sex"]["F"]["effusion"])
    assert sum(r["n"] for r in result["age"].values()) == 22  # two unknown ages left out


def test_largest_gap_is_the_max_over_attributes_and_labels():
    records, _, scores = cohort()
    result = subgroup_auroc(records, scores, NAMES)
    gaps = []
    for attribute in ("sex", "age"):
        for name in NAMES:
            values = {g: r[name] for g, r in result[attribute].items() if r[name] is not None}
            if len(values) >= 2:
                gaps.append((max(values.values()) - min(values.values()), attribute, name, values))
    gap, attribute, name, values = max(gaps, key=lambda g: g[0])
    largest = result["largest_gap"]
    assert (largest["attribute"], largest["label"]) == (attribute, name)
    assert largest["gap"] == pytest.approx(gap)
    high, low = largest["groups"]
    assert values[high] - values[low] == pytest.approx(gap)


def test_hand_computed_gap_between_sexes():
    # Women: perfectly ranked (AUROC 1); men: inverted (AUROC 0). No ages: no age groups.
    records = [record(0, "F", math.nan, (0.0,)), record(1, "F", math.nan, (1.0,)),
               record(2, "M", math.nan, (0.0,)), record(3, "M", math.nan, (1.0,))]
    scores = np.asarray([[0.1], [0.9], [0.8], [0.2]])
    result = subgroup_auroc(records, scores, ["x"])
    assert result["sex"] == {"F": {"x": 1.0, "macro": 1.0, "n": 2}, "M": {"x": 0.0, "macro": 0.0, "n": 2}}
    assert result["age"] == {}
    assert result["largest_gap"] == {"attribute": "sex", "groups": ["F", "M"], "label": "x", "gap": 1.0}


def test_no_gap_when_no_label_has_two_groups():
    records = [record(0, "F", 30, (0.0,)), record(1, "F", 30, (1.0,))]
    result = subgroup_auroc(records, np.asarray([[0.2], [0.7]]), ["x"])
    assert result["largest_gap"] is None
    assert result["age"]["0-40"]["x"] == 1.0


def test_bad_arguments_raise():
    records, _, scores = cohort()
    with pytest.raises(ValueError, match="scores of shape"):
        subgroup_auroc(records, scores[:, :1], NAMES)
    with pytest.raises(ValueError, match="lo < hi"):
        subgroup_auroc(records, scores, NAMES, age_bands=((40, 20),))
    with pytest.raises(ValueError, match="label names other than"):
        subgroup_auroc(records, scores, ("macro", "nodule"))
