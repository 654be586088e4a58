"""PretrainingMethod (SPEC §2): the base class tracks every loss term once and scales the total for the replicas;
a method only returns its named terms (issue 14.3)."""

import keras
import numpy as np
import pytest
from keras import ops

from kmedssl.distributed import context
from kmedssl.methods.ace import ACE
from kmedssl.methods.base import PretrainingMethod
from kmedssl.methods.mulsupcon import MulSupCon
from kmedssl.methods.mvcon import MVCon
from kmedssl.methods.mvmae import MVMAE
from kmedssl.methods.simclr import SimCLR
from kmedssl.methods.spcl import SPCL
from kmedssl.methods.supervised import Supervised
from tests.helpers import assert_close, to_numpy


class TwoTerms(PretrainingMethod):
    """A new method written against the base class: it returns its terms and total, nothing else."""

    loss_terms = ("first", "second")

    def call(self, inputs, training=False):
        return {"z": self.encoder(inputs["image"], training=training)}

    def compute_loss_terms(self, x, y, y_pred, training):
        first = ops.mean(ops.square(y_pred["z"]))
        second = ops.mean(ops.abs(y_pred["z"]))
        return first + 2.0 * second, {"first": first, "second": second}


def two_terms(rng):
    encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    return TwoTerms(encoder), {"image": rng.normal(size=(8, 4)).astype("float32")}


def fake_tf_replicas(monkeypatch, replicas):
    """``kmedssl.distributed`` as inside a tf.distribute step of ``replicas`` replicas (on any backend)."""
    monkeypatch.setattr(context, "_backend", lambda: "tensorflow")
    monkeypatch.setattr(context, "replica_count", lambda: replicas)


def test_the_base_scales_the_total_and_tracks_the_unscaled_terms(rng, monkeypatch):
    model, x = two_terms(rng)
    z = to_numpy(model(x)["z"]).astype(np.float64)
    first, second = np.mean(z**2), np.mean(np.abs(z))
    fake_tf_replicas(monkeypatch, 4)
    loss = model.compute_loss(x=x, y_pred=model(x), training=True)
    assert_close(loss, (first + 2 * second) / 4)
    assert_close(model.loss_trackers["first"].result(), first)
    assert_close(model.loss_trackers["second"].result(), second)


def test_one_replica_leaves_the_total_unscaled(rng):
    model, x = two_terms(rng)
    z = to_numpy(model(x)["z"]).astype(np.float64)
    assert_close(model.compute_loss(x=x, y_pred=model(x), training=True), np.mean(z**2) + 2 * np.mean(np.abs(z)))


def test_fit_logs_each_term_as_term_loss(rng):
    model, x = two_terms(rng)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit(x, batch_size=4, epochs=1, verbose=0, shuffle=False).history
    assert set(history) == {"loss", "first_loss", "second_loss"}


def test_a_method_that_overrides_compute_loss_is_refused():
    with pytest.raises(TypeError, match="compute_loss_terms"):
        class Unscaled(PretrainingMethod):  # noqa: F841
            def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
                return 0.0


def test_terms_must_be_the_declared_ones(rng):
    class Undeclared(TwoTerms):
        def compute_loss_terms(self, x, y, y_pred, training):
            total, terms = super().compute_loss_terms(x, y, y_pred, training)
            return total, {"first": terms["first"], "third": terms["second"]}

    model, x = two_terms(rng)
    model = Undeclared(model.encoder)
    with pytest.raises(ValueError, match="first.*second"):
        model.compute_loss(x=x, y_pred=model(x), training=True)


# The training log columns (``<term>_loss``) of every method; renaming one breaks users' logs and resumed runs.
LOG_TERMS = {
    MVMAE: ("reconstruction_frontal", "reconstruction_lateral", "alignment"),
    MVCon: ("infonce",),
    MulSupCon: ("supcon",),
    SPCL: ("tsp",),
    ACE: ("global", "composition", "decomposition"),
    SimCLR: ("nt_xent",),
    Supervised: ("classification",),
}


@pytest.mark.parametrize("method", LOG_TERMS, ids=lambda cls: cls.__name__)
def test_every_method_keeps_its_log_columns(method):
    assert method.loss_terms == LOG_TERMS[method]
    assert "compute_loss" not in vars(method) and "compute_loss_terms" in vars(method)
