"""Subject-level splits (SPEC §4): no subject appears in two splits."""

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


def subject_split(records, fractions=(0.8, 0.1, 0.1), seed=0):
    """Split records into train/val/test by subject, seeded.

    Subjects are sorted, shuffled with ``seed`` and cut at the cumulative ``fractions``; every record of
    a subject lands in its subject's split.

    Returns:
        dict ``{"train": [...], "val": [...], "test": [...]}`` of records, each in input order.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"Expected three non-negative split fractions summing to 1. Received: {fractions}")
    records = list(records)
    subjects = sorted({r.subject_id for r in records})
    order = np.random.default_rng(seed).permutation(len(subjects))
    cuts = np.round(np.cumsum(fractions)[:2] * len(subjects)).astype(int)
    assignment = {}
    for rank, index in enumerate(order):
        assignment[subjects[index]] = SPLIT_NAMES[int(np.searchsorted(cuts, rank, side="right"))]
    splits = {name: [] for name in SPLIT_NAMES}
    for record in records:
        splits[assignment[record.subject_id]].append(record)
    return splits
