"""Classification metrics: per-label and macro AUROC (SPEC §5)."""

import numpy as np
from sklearn.metrics import roc_auc_score


def per_label_auroc(labels, scores, label_names):
    """AUROC of each label; labels with a single class among ``labels`` are reported as None.

    Args:
        labels: (N, K) 0/1 ground truth. scores: (N, K) predicted scores. label_names: K names.
    """
    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.shape != scores.shape:
        raise ValueError(f"Expected labels and scores of the same shape. Received: {labels.shape}, {scores.shape}")
    result = {}
    for k, name in enumerate(label_names):
        column = labels[:, k]
        result[name] = float(roc_auc_score(column, scores[:, k])) if 0 < column.sum() < len(column) else None
    return result


def macro_auroc(per_label):
    """Mean AUROC over the labels that have one (labels with a single class in the test set are left out)."""
    values = [v for v in per_label.values() if v is not None]
    return float(np.mean(values)) if values else float("nan")
