"""Online probe monitoring during pretraining: a kNN or linear probe on a small held-out set, every N epochs.

The held-out images and labels are split once (seeded) into a *fit* part (the kNN memory bank, or the
linear probe's training set) and an *eval* part; every ``every_n_epochs`` epochs the encoder's frozen
``features`` of both parts are extracted in inference mode and the macro AUROC of the probe's eval-part
scores is written into the epoch's ``logs`` as ``probe_auroc``.

kNN (Wu et al. 2018, as DINO and solo-learn run it): the ``k`` most cosine-similar bank features vote with
weights ``w_j = exp(cos(q, b_j) / T)``; the score of label ``c`` is the weighted fraction of positive
votes ``sum_j w_j y_jc / sum_j w_j`` (a multi-label version of their weighted class vote).
"""

import keras
import numpy as np

from kmedssl.eval.features import extract_features
from kmedssl.eval.linear_probe import fit_linear_probe
from kmedssl.eval.metrics import macro_auroc, per_label_auroc

PROBES = ("knn", "linear")


def knn_scores(bank_features, bank_labels, query_features, k=20, temperature=0.07):
    """Weighted kNN label scores of the queries.

    ``score(q)_c = sum_{j in topk(q)} w_j y_jc / sum_{j in topk(q)} w_j``, ``w_j = exp(cos(q, b_j) / T)``.

    Args:
        bank_features: (M, D). bank_labels: (M, K) 0/1. query_features: (Q, D).
        k: neighbours (``min(k, M)`` are used). temperature: ``T`` of the vote weights.

    Returns:
        (Q, K) scores in [0, 1].
    """
    if k < 1 or temperature <= 0:
        raise ValueError(f"Expected k >= 1 and temperature > 0. Received: k={k}, temperature={temperature}")
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # noqa: E731
    similarity = unit(np.asarray(query_features, "float64")) @ unit(np.asarray(bank_features, "float64")).T  # (Q, M)
    k = min(k, similarity.shape[1])
    neighbours = np.argsort(-similarity, axis=1, kind="stable")[:, :k]  # (Q, k)
    nearest = np.take_along_axis(similarity, neighbours, axis=1)  # (Q, k)
    weights = np.exp((nearest - nearest[:, :1]) / temperature)  # (Q, k); shifted by the max for stability
    votes = np.asarray(bank_labels, "float64")[neighbours]  # (Q, k, K)
    return np.einsum("qk,qkc->qc", weights, votes) / weights.sum(axis=1, keepdims=True)


class ProbeMonitor(keras.callbacks.Callback):
    """Logs ``probe_auroc``, a kNN or linear-probe macro AUROC of ``model.encoder.features``, every N epochs.

    Epochs ``e`` (0-based) with ``(e + 1) % every_n_epochs == 0`` are probed; on the others ``probe_auroc``
    is NaN, so that every epoch has the key (``CSVLogger`` fixes its columns at the first epoch and
    ``History`` then keeps one value per epoch). Place the monitor before ``CSVLogger`` (and any callback
    that reads ``probe_auroc``) in the ``callbacks`` list. Features are extracted with ``training=False`` and
    no variable is written, so training is unchanged.

    Args:
        images: (N, H, W, C) held-out images (not used in pretraining).
        labels: (N, K) 0/1 labels of the images.
        every_n_epochs: probe period in epochs.
        probe: ``"knn"`` (weighted cosine vote, see :func:`knn_scores`) or ``"linear"`` (standardised
            features, one logistic regression per label: :func:`kmedssl.eval.fit_linear_probe`).
        k: kNN neighbours. temperature: kNN vote temperature.
        fit_fraction: share of the held-out set used as the bank / probe training set (the rest is scored).
        batch_size: feature extraction batch size.
        seed: seed of the fit/eval split and of the linear probe.
    """

    def __init__(self, images, labels, every_n_epochs=1, probe="knn", k=20, temperature=0.07, fit_fraction=0.5,
                 batch_size=64, seed=0):
        super().__init__()
        images, labels = np.asarray(images, "float32"), np.asarray(labels, "float32")
        if images.ndim != 4 or labels.ndim != 2 or len(images) != len(labels):
            raise ValueError(
                f"Expected images (N, H, W, C) and labels (N, K) with the same N. Received: images.shape="
                f"{images.shape}, labels.shape={labels.shape}"
            )
        if every_n_epochs < 1 or probe not in PROBES or not 0.0 < fit_fraction < 1.0:
            raise ValueError(
                f"Expected every_n_epochs >= 1, probe in {PROBES} and 0 < fit_fraction < 1. Received: "
                f"every_n_epochs={every_n_epochs}, probe={probe!r}, fit_fraction={fit_fraction}"
            )
        if k < 1 or temperature <= 0:
            raise ValueError(f"Expected k >= 1 and temperature > 0. Received: k={k}, temperature={temperature}")
        order = np.random.default_rng(seed).permutation(len(images))
        cut = int(round(fit_fraction * len(images)))
        self.fit_indices, self.eval_indices = np.sort(order[:cut]), np.sort(order[cut:])
        eval_labels = labels[self.eval_indices]
        if not len(self.fit_indices) or not np.any((eval_labels.min(axis=0) == 0) & (eval_labels.max(axis=0) == 1)):
            raise ValueError(
                f"Expected a fit part and an eval part with both classes of at least one label. Received: "
                f"{len(images)} images split {len(self.fit_indices)}/{len(self.eval_indices)} by "
                f"fit_fraction={fit_fraction}; use more held-out images"
            )
        self.images = images
        self.labels = labels
        self.every_n_epochs = every_n_epochs
        self.probe = probe
        self.k = k
        self.temperature = temperature
        self.fit_fraction = fit_fraction
        self.batch_size = batch_size
        self.seed = seed

    def on_train_begin(self, logs=None):
        if not hasattr(self.model, "encoder") or not hasattr(self.model.encoder, "features"):
            raise ValueError(
                f"Expected a model with an `encoder` that has `features(images)`. Received: {type(self.model).__name__}"
            )

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["probe_auroc"] = self.probe_auroc() if (epoch + 1) % self.every_n_epochs == 0 else float("nan")

    def probe_auroc(self):
        """Macro AUROC of the probe on the eval part, with the encoder as it is now."""
        features = extract_features(self.model.encoder, self.images, self.batch_size)  # (N, D)
        fit_x, fit_y = features[self.fit_indices], self.labels[self.fit_indices]
        eval_x, eval_y = features[self.eval_indices], self.labels[self.eval_indices]
        if self.probe == "knn":
            scores = knn_scores(fit_x, fit_y, eval_x, self.k, self.temperature)
        else:
            scores = fit_linear_probe(fit_x, fit_y, seed=self.seed)(eval_x)
        names = [str(c) for c in range(self.labels.shape[1])]
        return macro_auroc(per_label_auroc(eval_y, scores, names))
