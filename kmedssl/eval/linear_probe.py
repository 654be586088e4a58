"""Linear probing: a linear classifier per label on frozen features (SPEC §5)."""

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler


def fit_linear_probe(features, labels, l2=1.0, seed=0):
    """Standardise the features, then fit one L2-regularised logistic regression per label column.

    Args:
        features: (N, D) float. labels: (N, K) 0/1. l2: inverse regularisation strength C.

    Returns:
        ``predict(features) -> (M, K)`` probabilities; a label with one class in training predicts its
        training prevalence.
    """
    scaler = StandardScaler().fit(features)
    x = scaler.transform(features)
    heads = []
    for k in range(labels.shape[1]):
        column = labels[:, k]
        if column.min() == column.max():
            heads.append(float(column[0]))
        else:
            heads.append(LogisticRegression(C=l2, max_iter=2000, random_state=seed).fit(x, column))

    def predict(new_features):
        z = scaler.transform(new_features)
        return np.stack(
            [np.full(len(z), h) if isinstance(h, float) else h.predict_proba(z)[:, 1] for h in heads], axis=1
        )

    return predict
