"""The one contrastive dispatch (kmedssl.losses.contrastive): every paired and label-weighted loss declares its
positive structure and similarity and goes through ``contrastive_loss``; the plain path is the gathered path
with one replica; the positive structures and the Jaccard matrix on small closed forms."""

import keras
import numpy as np
import pytest

from kmedssl.losses import (
    JaccardSupCon,
    MultiviewInfoNCE,
    NTXent,
    TSPInfoNCE,
    contrastive,
    jaccard_supcon,
    multiview_infonce,
    nt_xent,
    replicas,
    tsp_infonce,
)
from tests.helpers import assert_close, to_numpy, value_and_grad
from tests.losses import oracles

RNG = np.random.default_rng(5)
PAIR = RNG.normal(size=(2, 4, 3)).astype("float32")  # z_a, z_b: (B, D)
FEATURES = RNG.normal(size=(4, 2, 3)).astype("float32")  # (B, V, D)
LABELS = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0]], dtype="float32")  # (B, K), one empty row


PAIRED, JACCARD = contrastive.PairedPositives, contrastive.JaccardPositives
COSINE, TSP = contrastive.CosineSimilarity, contrastive.TSPSimilarity


def _declaration(name):
    """``(call, positives and their parameters, similarity and its parameters, factor, has labels)`` of each public
    loss function and Loss class."""
    stacked = np.stack(PAIR, axis=1)  # (B, 2, D), as the Loss classes take it
    zeros = np.zeros(4, "float32")
    cosine = (COSINE, {"temperature": 0.3, "scale": 1 / 0.3, "kappa": None})
    tsp = (TSP, {"kappa": 4.0, "scale": 5.0})
    jaccard = ((JACCARD, {"threshold": 0.3}), (COSINE, {"temperature": 0.2}), 2.0, True)  # factor T / T_base
    return {
        "nt_xent": (lambda: nt_xent(*PAIR, 0.3), (PAIRED, {"exclude_positive": False}), cosine, 1.0, False),
        "NTXent": (lambda: NTXent(0.3)(zeros, stacked), (PAIRED, {"exclude_positive": False}), cosine, 1.0, False),
        "multiview_infonce": (lambda: multiview_infonce(*PAIR, 0.3), (PAIRED, {"exclude_positive": True}), cosine,
                              1.0, False),
        "MultiviewInfoNCE": (lambda: MultiviewInfoNCE(0.3, exclude_positive=False)(zeros, stacked),
                             (PAIRED, {"exclude_positive": False}), cosine, 1.0, False),
        "tsp_infonce": (lambda: tsp_infonce(*PAIR, kappa=4.0, scale=5.0), (PAIRED, {"exclude_positive": False}), tsp,
                        1.0, False),
        "TSPInfoNCE": (lambda: TSPInfoNCE(kappa=4.0, scale=5.0)(zeros, stacked), (PAIRED, {"exclude_positive": False}),
                       tsp, 1.0, False),
        "jaccard_supcon": (lambda: jaccard_supcon(FEATURES, LABELS, 0.2, 0.3, 0.1), *jaccard),
        "JaccardSupCon": (lambda: JaccardSupCon(0.2, 0.3, 0.1)(LABELS, FEATURES), *jaccard),
    }[name]


@pytest.mark.parametrize(
    "name",
    ["nt_xent", "NTXent", "multiview_infonce", "MultiviewInfoNCE", "tsp_infonce", "TSPInfoNCE", "jaccard_supcon",
     "JaccardSupCon"],
)
def test_each_public_loss_goes_through_the_one_dispatch(monkeypatch, name):
    call, (positive_type, positive_parameters), (similarity_type, similarity_parameters), factor, has_labels = (
        _declaration(name))
    calls, dispatch = [], contrastive.contrastive_loss

    def spy(views, positives, similarity, labels=None, factor=1.0, **kwargs):
        calls.append((positives, similarity, labels, factor))
        return dispatch(views, positives, similarity, labels=labels, factor=factor, **kwargs)

    monkeypatch.setattr(contrastive, "contrastive_loss", spy)
    assert np.isfinite(to_numpy(call()))
    assert len(calls) == 1
    positives, similarity, labels, declared_factor = calls[0]
    assert type(positives) is positive_type and type(similarity) is similarity_type
    for instance, parameters in ((positives, positive_parameters), (similarity, similarity_parameters)):
        for attribute, value in parameters.items():
            assert getattr(instance, attribute) == pytest.approx(value)
    assert declared_factor == pytest.approx(factor) and (labels is not None) == has_labels


def _loss_and_inputs(name, block_size):
    if name == "nt_xent":
        return lambda a, b: nt_xent(a, b, 0.3, block_size=block_size), PAIR
    if name == "multiview_infonce":
        return lambda a, b: multiview_infonce(a, b, 0.2, block_size=block_size), PAIR
    if name == "tsp_infonce":
        return lambda a, b, s: tsp_infonce(a, b, kappa=4.0, scale=s, block_size=block_size), (*PAIR, np.float32(5.0))
    return lambda f: jaccard_supcon(f, LABELS, 0.2, 0.3, 0.1, block_size=block_size), (FEATURES,)


@pytest.mark.parametrize("block_size", [0, 3])
@pytest.mark.parametrize("name", ["nt_xent", "multiview_infonce", "tsp_infonce", "jaccard_supcon"])
def test_plain_path_is_the_gathered_path_with_one_replica(monkeypatch, name, block_size):
    """Forcing the gathered path with one replica (all_gather the identity, replica 0) gives exactly the plain loss
    and gradients: the plain path is its special case (candidates = anchors = this program's rows)."""
    fn, inputs = _loss_and_inputs(name, block_size)
    plain, plain_grads = value_and_grad(fn, *inputs)
    monkeypatch.setattr(replicas, "replica_count", lambda: 2)  # takes the gathered path ...
    monkeypatch.setattr(replicas, "replica_index", lambda: 0)
    monkeypatch.setattr(replicas, "all_gather", lambda x: x)  # ... over one replica's rows
    assert replicas.replica_path("global") == "gathered"
    gathered, gathered_grads = value_and_grad(fn, *inputs)
    np.testing.assert_array_equal(gathered, plain)
    for g_gathered, g_plain in zip(gathered_grads, plain_grads):
        np.testing.assert_array_equal(g_gathered, g_plain)


def test_jaccard_matrix_closed_form():
    labels = keras.ops.convert_to_tensor(LABELS)
    expected = [[1, 1 / 2, 0, 1 / 2], [1 / 2, 1, 0, 1], [0, 0, 0, 0], [1 / 2, 1, 0, 1]]  # empty with empty: 0
    assert_close(contrastive.jaccard_matrix(labels, labels), expected)
    assert_close(contrastive.jaccard_matrix(labels[:2], labels), np.asarray(expected)[:2])


@pytest.mark.parametrize("exclude_positive", [False, True])
def test_paired_positives_pair_rows_within_each_replica(exclude_positive):
    """Two replicas of 2 samples, gathered replica-major: [a0 a1 b0 b1 | a2 a3 b2 b3]; a row's positive is the
    same sample's other view within its replica's rows."""
    rows = keras.ops.arange(8, dtype="int32")
    weights, is_positive, in_denominator = contrastive.PairedPositives(exclude_positive).targets(
        rows, rows, None, None, group_rows=4)
    positives = [2, 3, 0, 1, 6, 7, 4, 5]
    np.testing.assert_array_equal(to_numpy(is_positive), np.eye(8, dtype=bool)[positives])
    np.testing.assert_array_equal(to_numpy(weights), np.eye(8)[positives])
    expected_denominator = ~np.eye(8, dtype=bool)
    if exclude_positive:
        expected_denominator &= ~np.eye(8, dtype=bool)[positives]
    np.testing.assert_array_equal(to_numpy(in_denominator), expected_denominator)


def test_losses_without_a_fused_op_never_ask_for_one(monkeypatch):
    """KMEDSSL_KERNELS=triton requires a fused op where one serves the call (and raises where it cannot run);
    the cosine paired losses have none and never consult the kernel probe, on every backend."""
    monkeypatch.setenv("KMEDSSL_KERNELS", "triton")
    assert_close(nt_xent(*PAIR, 0.3), oracles.nt_xent(*PAIR, 0.3))
    assert_close(multiview_infonce(*PAIR, 0.2), oracles.multiview_infonce(*PAIR, 0.2))
    assert contrastive._fused_call(PAIR, None, contrastive.PairedPositives(),
                                   contrastive.CosineSimilarity(0.3), 1.0) is None
