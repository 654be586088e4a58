"""The gathered ``gather="global"`` path of the contrastive losses, in one process: this process plays replica 1
of 2, whose ``all_gather`` returns replica 0's fixed rows followed by its own (``kmedssl.losses.replicas``
with its collectives replaced). The loss is the mean over the LOCAL anchors of the per-anchor terms of the
whole global batch, checked against float64 oracles written from the papers' equations; the plain and the
row-blocked (local anchors marked among the gathered rows) paths agree in value and gradient.
(The real engines are checked end to end in tests/distributed/.)"""

import math

import numpy as np
import pytest

from kmedssl.losses import jaccard_supcon, multiview_infonce, nt_xent, tsp_infonce
from kmedssl.losses import replicas
from tests.helpers import assert_close, value_and_grad
from tests.losses.oracles import jaccard, normalize

B_LOCAL, DIM, LABELS = 3, 5, 4
RNG = np.random.default_rng(3)
OTHER = {  # replica 0's rows, by their width: unit embeddings (as every replica gathers) and Jaccard label rows
    DIM: normalize(RNG.normal(size=(2 * B_LOCAL, DIM))).astype("float32"),
    LABELS: (RNG.random((2 * B_LOCAL, LABELS)) < 0.5).astype("float32"),
}


@pytest.fixture
def replica_1_of_2(monkeypatch):
    from keras import ops

    def all_gather(x):
        other = ops.convert_to_tensor(OTHER[x.shape[1]][: x.shape[0]])
        return ops.concatenate([ops.cast(other, x.dtype), x], axis=0)

    monkeypatch.setattr(replicas, "replica_count", lambda: 2)
    monkeypatch.setattr(replicas, "replica_index", lambda: 1)
    monkeypatch.setattr(replicas, "all_gather", all_gather)


def _lse(values):
    peak = max(values)
    return peak + math.log(sum(math.exp(v - peak) for v in values))


def paired_oracle(local_a, local_b, scale, similarity, exclude_positive):
    """Mean over replica 1's anchors of the paired InfoNCE terms of the global batch [A0; A1] / [B0; B1]."""
    other_a, other_b = OTHER[DIM][:B_LOCAL], OTHER[DIM][B_LOCAL:2 * B_LOCAL]
    z_a = normalize(np.concatenate([other_a, local_a]))  # (2b, D) global, replica-major
    z_b = normalize(np.concatenate([other_b, local_b]))
    z = np.concatenate([z_a, z_b])  # (4b, D): row i's positive is (i + 2b) mod 4b
    rows, half = len(z), len(z) // 2
    local = [i for i in range(rows) if (i % half) >= B_LOCAL]  # replica 1's rows of each view
    terms = []
    for i in local:
        positive = (i + half) % rows
        logits = [scale * similarity(float(z[i] @ z[j])) for j in range(rows)]
        denominator = [logits[j] for j in range(rows) if j != i and not (exclude_positive and j == positive)]
        terms.append(_lse(denominator) - logits[positive])
    return sum(terms) / len(terms)


def jaccard_oracle(features, labels, temperature, threshold):
    """Mean over replica 1's anchors of Eq. 3's terms (paper 001) over both replicas' rows (order-free)."""
    z_local = [normalize(features[b, v]) for v in range(2) for b in range(B_LOCAL)]  # view-major
    y_local = [labels[b] for v in range(2) for b in range(B_LOCAL)]
    z = [normalize(row) for row in OTHER[DIM]] + z_local
    y = list(OTHER[LABELS]) + y_local
    total = 0.0
    for a in range(len(OTHER[DIM]), len(z)):
        others = [k for k in range(len(z)) if k != a]
        log_denominator = _lse([float(z[a] @ z[k]) / temperature for k in others])
        positives = [p for p in others if jaccard(y[a], y[p]) >= threshold]
        if positives:
            total -= sum(jaccard(y[a], y[p]) * (float(z[a] @ z[p]) / temperature - log_denominator)
                         for p in positives) / len(positives)
    return total / len(z_local)


@pytest.mark.parametrize("loss", ["nt_xent", "multiview_infonce", "tsp_infonce"])
def test_gathered_paired_losses(replica_1_of_2, loss):
    z_a, z_b = (RNG.normal(size=(B_LOCAL, DIM)).astype("float32") for _ in range(2))
    if loss == "nt_xent":
        expected = paired_oracle(z_a, z_b, 1 / 0.1, lambda c: c, exclude_positive=False)

        def fn(a, b, block):
            return nt_xent(a, b, 0.1, block_size=block)
    elif loss == "multiview_infonce":
        expected = paired_oracle(z_a, z_b, 1 / 0.5, lambda c: c, exclude_positive=True)

        def fn(a, b, block):
            return multiview_infonce(a, b, 0.5, block_size=block)
    else:
        kappa, scale = 4.0, 3.0
        expected = paired_oracle(z_a, z_b, scale, lambda c: 0.5 * (1 + c) / (1 + (1 - c) * kappa), False)

        def fn(a, b, block):
            return tsp_infonce(a, b, kappa=kappa, scale=scale, block_size=block)
    plain, plain_grads = value_and_grad(lambda a, b: fn(a, b, 0), z_a, z_b)
    blocked, blocked_grads = value_and_grad(lambda a, b: fn(a, b, 5), z_a, z_b)  # 5 does not divide 12 rows
    assert_close(plain, expected, rtol=1e-5)
    assert_close(blocked, expected, rtol=1e-5)
    for g_blocked, g_plain in zip(blocked_grads, plain_grads):
        assert_close(g_blocked, g_plain, rtol=1e-4, atol=1e-6)
    assert max(float(np.abs(g).max()) for g in plain_grads) > 1e-3


def test_gathered_jaccard_supcon(replica_1_of_2):
    features = RNG.normal(size=(B_LOCAL, 2, DIM)).astype("float32")
    labels = (RNG.random((B_LOCAL, LABELS)) < 0.5).astype("float32")
    expected = jaccard_oracle(features, labels, 0.2, 0.3)
    plain, plain_grads = value_and_grad(lambda f: jaccard_supcon(f, labels, 0.2, 0.3, 0.2, block_size=0), features)
    blocked, blocked_grads = value_and_grad(lambda f: jaccard_supcon(f, labels, 0.2, 0.3, 0.2, block_size=4),
                                            features)
    assert_close(plain, expected, rtol=1e-5)
    assert_close(blocked, expected, rtol=1e-5)
    assert_close(blocked_grads[0], plain_grads[0], rtol=1e-4, atol=1e-6)


def test_local_gather_ignores_the_other_replica(replica_1_of_2):
    """``gather="local"`` on a replicated engine is the plain loss of this replica's rows."""
    z_a, z_b = (RNG.normal(size=(B_LOCAL, DIM)).astype("float32") for _ in range(2))
    expected = 0.0
    z = normalize(np.concatenate([z_a, z_b]))
    for i in range(2 * B_LOCAL):
        logits = [float(z[i] @ z[j]) / 0.1 for j in range(2 * B_LOCAL)]
        expected += _lse([logits[j] for j in range(2 * B_LOCAL) if j != i]) - logits[(i + B_LOCAL) % (2 * B_LOCAL)]
    assert_close(value_and_grad(lambda a, b: nt_xent(a, b, 0.1, gather="local"), z_a, z_b)[0],
                 expected / (2 * B_LOCAL), rtol=1e-5)
