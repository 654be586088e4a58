"""Per-subgroup AUROC by sex and age band, and the largest gap between subgroups (paper 002 §5-6).

Paper 002 argues that a pretrained encoder must "perform consistently across all subgroups" (§6) and warns
that pretraining data may favour one demographic (§5). This module measures it: the test predictions are
split by ``ImageRecord.sex`` and by age band, per-label and macro AUROC are computed in every group, and
the largest per-label difference between two groups of the same attribute is reported.

``gap(attribute, label) = max_g AUROC_g(label) - min_g AUROC_g(label)`` over the groups ``g`` of the
attribute whose ``label`` has both classes; ``largest_gap`` is the maximum over attributes and labels.
"""

import numpy as np

from kmedssl.eval.metrics import macro_auroc, per_label_auroc

RESERVED_KEYS = ("macro", "n")


def subgroup_auroc(records, scores, label_names, age_bands=((0, 40), (40, 60), (60, 200))):
    """Per-label and macro AUROC of each sex and each age band.

    Records with an unknown sex (``""``) are left out of the sex groups, records with an unknown age (NaN)
    or an age outside every band are left out of the age groups. Bands are half-open, ``lo <= age < hi``,
    and named ``"lo-hi"``. Only groups with at least one record are reported. A label with a single class
    in a group has AUROC None there and is left out of that group's macro (NaN when no label is left).

    Args:
        records: N ``ImageRecord`` (their ``labels``, ``sex`` and ``age`` are used).
        scores: (N, K) predicted scores, rows in the order of ``records``.
        label_names: the K label names, in the order of the label columns.
        age_bands: ``(lo, hi)`` pairs in years, ``lo < hi``.

    Returns:
        ``{"sex": {"F": {label: auroc|None, ..., "macro": x, "n": count}, "M": {...}},
        "age": {"0-40": {...}, ...}, "largest_gap": {"attribute", "groups", "label", "gap"} or None}``;
        ``groups`` is ``[best group, worst group]`` of that label.
    """
    label_names = tuple(label_names)
    scores = np.asarray(scores, dtype="float64")
    if scores.shape != (len(records), len(label_names)):
        raise ValueError(
            f"Expected scores of shape (len(records), len(label_names)) = ({len(records)}, {len(label_names)}). "
            f"Received: scores.shape={scores.shape}"
        )
    clashes = [name for name in label_names if name in RESERVED_KEYS]
    if clashes:
        raise ValueError(f"Expected label names other than {RESERVED_KEYS}. Received: {clashes}")
    bad_bands = [band for band in age_bands if len(band) != 2 or not band[0] < band[1]]
    if bad_bands:
        raise ValueError(f"Expected age bands as (lo, hi) pairs with lo < hi. Received: {bad_bands}")
    labels = np.asarray([record.labels for record in records], dtype="float64")  # (N, K)
    if labels.shape != scores.shape:
        raise ValueError(
            f"Expected every record to have {len(label_names)} labels. Received: labels.shape={labels.shape}"
        )

    sex_keys = [record.sex or None for record in records]
    age_keys = [age_band_name(record.age, age_bands) for record in records]
    result = {
        "sex": group_reports(sex_keys, labels, scores, label_names, order=sorted({k for k in sex_keys if k})),
        "age": group_reports(age_keys, labels, scores, label_names, order=[band_name(b) for b in age_bands]),
    }
    result["largest_gap"] = largest_gap(result, label_names)
    return result


def band_name(band):
    return f"{band[0]:g}-{band[1]:g}"


def age_band_name(age, age_bands):
    """Name of the first band with ``lo <= age < hi``; None for a NaN age or one outside every band."""
    if age is None or np.isnan(age):
        return None
    for band in age_bands:
        if band[0] <= age < band[1]:
            return band_name(band)
    return None


def group_reports(keys, labels, scores, label_names, order):
    """``{group: {label: auroc|None, "macro": x, "n": count}}`` for the groups of ``order`` that have records."""
    keys = np.asarray(keys, dtype=object)
    reports = {}
    for group in order:
        members = keys == group  # (N,) bool
        if not members.any():
            continue
        per_label = per_label_auroc(labels[members], scores[members], label_names)
        reports[group] = {**per_label, "macro": macro_auroc(per_label), "n": int(members.sum())}
    return reports


def largest_gap(result, label_names):
    """The (attribute, label) with the largest best-minus-worst group AUROC; None when no label has two groups."""
    best = None
    for attribute in ("sex", "age"):
        for label in label_names:
            values = {g: report[label] for g, report in result[attribute].items() if report[label] is not None}
            if len(values) < 2:
                continue
            high, low = max(values, key=values.get), min(values, key=values.get)
            gap = values[high] - values[low]
            if best is None or gap > best["gap"]:
                best = {"attribute": attribute, "groups": [high, low], "label": label, "gap": float(gap)}
    return best
