"""Frontal/lateral study pairing (paper 000 §2).

Every study with at least one frontal (PA, AP) and one lateral (LATERAL, LL) image yields every
frontal x lateral combination of its images; each pair appears once.
"""

import collections


def study_pairs(records):
    """All unique (frontal, lateral) record pairs of each study, in a deterministic order.

    Args:
        records: iterable of ``ImageRecord``.

    Returns:
        list of ``(frontal_record, lateral_record)`` tuples, ordered by study then image id.
    """
    by_study = collections.defaultdict(list)
    for record in records:
        by_study[(record.subject_id, record.study_id)].append(record)
    pairs = []
    for key in sorted(by_study):
        images = sorted(by_study[key], key=lambda r: r.image_id)
        frontals = [r for r in images if r.is_frontal]
        laterals = [r for r in images if r.is_lateral]
        pairs.extend((f, l) for f in frontals for l in laterals)
    return pairs
