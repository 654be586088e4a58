"""SSL health metrics against float64 references written from the papers' formulas, closed forms, the collapse
warning, the callback inside ``fit``, and the training-curves figure."""

import csv
import math

import keras
import numpy as np
import pytest
from keras import ops

from kmedssl.training.ssl_health import (
    HEALTH_COLUMNS,
    SSLHealthMonitor,
    alignment,
    collapse_reason,
    health_monitor,
    embedding_rank,
    embedding_std,
    plot_training_curves,
    ssl_health,
    two_views,
    uniformity,
)
from tests.eval.test_plots import assert_png_drawn
from tests.helpers import assert_close

# === float64 references, one formula each ===


def unit(z):
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def std_reference(z):
    """lightly's std_of_l2_normalized: torch.std (Bessel-corrected) over the batch, mean over the dimensions."""
    return np.std(unit(z), axis=0, ddof=1).mean()


def rankme_reference(z, epsilon=1e-7):
    """Garrido et al. 2023, Eq. 1: exp(-sum_k p_k log p_k), p_k = sigma_k / ||sigma||_1 + epsilon."""
    sigma = np.linalg.svd(z, compute_uv=False)
    p = sigma / sigma.sum() + epsilon
    return math.exp(-sum(pk * math.log(pk) for pk in p))


def alignment_reference(x, y, alpha=2.0):
    """Wang & Isola 2020: E_{(x, y) ~ p_pos} ||f(x) - f(y)||_2^alpha, f on the unit sphere."""
    fx, fy = unit(x), unit(y)
    return np.mean([np.linalg.norm(fx[i] - fy[i]) ** alpha for i in range(len(x))])


def uniformity_reference(z, t=2.0):
    """Wang & Isola 2020: log E_{x, y} exp(-t ||f(x) - f(y)||_2^2) over the pairs of distinct samples (pdist)."""
    f = unit(z)
    terms = [math.exp(-t * np.sum((f[i] - f[j]) ** 2)) for i in range(len(z)) for j in range(i + 1, len(z))]
    return math.log(sum(terms) / len(terms))


# === Metrics ===


# Every test embeds 16 images in D = 8 (and its transpose): JAX compiles each eager op once per shape.


def test_metrics_match_the_float64_references(rng):
    z_1 = rng.normal(size=(16, 8)) + 0.5  # a shared mean, as raw encoder features have
    z_2 = z_1 + 0.3 * rng.normal(size=(16, 8))
    x_1, x_2 = ops.convert_to_tensor(z_1, "float32"), ops.convert_to_tensor(z_2, "float32")
    assert_close(embedding_std(x_1), std_reference(z_1), rtol=1e-5)
    assert_close(embedding_rank(x_1), rankme_reference(z_1), rtol=1e-4)  # N > D
    assert_close(embedding_rank(ops.transpose(x_1)), rankme_reference(z_1.T), rtol=1e-4)  # N < D
    assert_close(alignment(x_1, x_2), alignment_reference(z_1, z_2), rtol=1e-5)
    assert_close(alignment(x_1, x_2, alpha=1.0), alignment_reference(z_1, z_2, alpha=1.0), rtol=1e-5)
    assert_close(uniformity(x_1), uniformity_reference(z_1), rtol=1e-5, atol=1e-6)
    assert_close(uniformity(x_1, t=0.5), uniformity_reference(z_1, t=0.5), rtol=1e-5, atol=1e-6)

    health = ssl_health(z_1, z_2)
    assert list(health) == list(HEALTH_COLUMNS) and all(type(v) is float for v in health.values())
    expected = {
        "embedding_std": (std_reference(z_1) + std_reference(z_2)) / 2,
        "embedding_rank": (rankme_reference(z_1) + rankme_reference(z_2)) / 2,
        "alignment": alignment_reference(z_1, z_2),
        "uniformity": (uniformity_reference(z_1) + uniformity_reference(z_2)) / 2,
    }
    np.testing.assert_allclose([health[k] for k in HEALTH_COLUMNS], [expected[k] for k in HEALTH_COLUMNS], rtol=1e-4)


def test_closed_forms(rng):
    identical = ops.convert_to_tensor(np.tile(rng.normal(size=(1, 8)), (16, 1)), "float32")
    assert float(embedding_std(identical)) < 1e-6
    assert abs(float(embedding_rank(identical)) - 1.0) < 1e-3
    assert abs(float(uniformity(identical))) < 1e-6  # every pair at distance 0: log 1
    assert float(alignment(identical, identical)) == pytest.approx(0.0, abs=1e-6)

    orthonormal = ops.convert_to_tensor(np.linalg.qr(rng.normal(size=(16, 8)))[0].T, "float32")  # (8, 16)
    assert float(embedding_rank(orthonormal)) == pytest.approx(8.0, rel=1e-4)
    # Orthonormal rows are pairwise at squared distance 2: uniformity = log exp(-2t) = -2t.
    assert float(uniformity(orthonormal, t=2.0)) == pytest.approx(-4.0, abs=1e-5)
    # The D one-hot rows: each column holds one 1 and D - 1 zeros, so the std is exactly 1/sqrt(D).
    assert float(embedding_std(ops.eye(8))) == pytest.approx(1 / math.sqrt(8), rel=1e-6)
    # Scaling a view changes nothing after normalisation; equal views are perfectly aligned.
    z = ops.convert_to_tensor(rng.normal(size=(16, 8)), "float32")
    assert float(alignment(z, 3.0 * z)) == pytest.approx(0.0, abs=1e-6)
    # Antipodal pairs are as far apart as the sphere allows: ||f(x) - f(y)||^2 = 4.
    assert float(alignment(z, -z)) == pytest.approx(4.0, rel=1e-6)
    # An all-zero embedding has one (null) direction, not a NaN rank.
    assert float(embedding_rank(ops.zeros((16, 8)))) == pytest.approx(1.0, abs=1e-3)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(N, D\) with N >= 2"):
        embedding_std(ops.ones((1, 4)))
    with pytest.raises(ValueError, match="same shape"):
        alignment(ops.ones((3, 4)), ops.ones((2, 4)))
    with pytest.raises(ValueError, match="N >= 2"):
        SSLHealthMonitor(np.zeros((3, 8, 8, 1)), np.zeros((2, 8, 8, 1)))
    with pytest.raises(ValueError, match="every_n_epochs"):
        SSLHealthMonitor(np.zeros((3, 8, 8, 1)), np.zeros((3, 8, 8, 1)), every_n_epochs=0)


# === Views ===


def test_two_views_are_fixed_random_crops_of_the_images(rng):
    images = rng.random((6, 16, 16, 1)).astype("float32")
    view_1, view_2 = two_views(images, seed=3)
    again_1, again_2 = two_views(images, seed=3)
    assert view_1.shape == view_2.shape == images.shape and view_1.dtype == np.float32
    np.testing.assert_array_equal(view_1, again_1)
    np.testing.assert_array_equal(view_2, again_2)
    assert not np.allclose(view_1, view_2) and not np.allclose(view_1, two_views(images, seed=4)[0])
    assert view_1.min() >= 0.0 and view_1.max() <= 1.0
    # With the whole image as the crop and no flip, a view is the image itself.
    whole, _ = two_views(images, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_probability=0.0)
    np.testing.assert_allclose(whole, images, atol=1e-5)
    with pytest.raises(ValueError, match="square images"):
        two_views(images[:, :8])


# === Callback ===


class ToyEncoder(keras.Model):
    """Flatten -> Dense(dim); ``constant=True`` embeds every image as the same vector (complete collapse)."""

    def __init__(self, dim=8, constant=False, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.constant = constant
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(dim)

    def call(self, images, training=False):
        z = self.dense(self.flatten(images))
        return ops.ones_like(z) if self.constant else z

    def features(self, images, training=False):
        return self(images, training=training)


class ToyMethod(keras.Model):
    def __init__(self, encoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = keras.layers.Dense(1)

    def call(self, images, training=False):
        return self.head(self.encoder(images, training=training))


def held_out(rng, count=16):
    return two_views(rng.random((count, 8, 8, 1)).astype("float32"))


def test_the_callback_logs_python_floats_during_fit(rng, tmp_path):
    view_1, view_2 = held_out(rng)
    monitor = SSLHealthMonitor(view_1, view_2, every_n_epochs=2, batch_size=8)
    seen = []
    spy = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(dict(logs)))
    log_file = tmp_path / "log.csv"
    model = ToyMethod(ToyEncoder())
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    images = rng.random((16, 8, 8, 1)).astype("float32")
    history = model.fit(images, rng.random((16, 1)).astype("float32"), batch_size=8, epochs=2, verbose=0,
                        shuffle=False, callbacks=[monitor, spy, keras.callbacks.CSVLogger(str(log_file))])
    first, second = seen
    assert all(math.isnan(first[key]) for key in HEALTH_COLUMNS)  # not a measured epoch
    assert all(type(second[key]) is float and math.isfinite(second[key]) for key in HEALTH_COLUMNS)
    assert monitor.dim == 8
    expected = ssl_health(model.encoder.features(ops.convert_to_tensor(view_1)),
                          model.encoder.features(ops.convert_to_tensor(view_2)))
    assert [second[key] for key in HEALTH_COLUMNS] == pytest.approx([expected[key] for key in HEALTH_COLUMNS],
                                                                    rel=1e-5)
    assert 1.0 <= second["embedding_rank"] <= 8.0 and second["uniformity"] < 0.0
    assert history.history["embedding_rank"][1] == second["embedding_rank"]
    rows = list(csv.DictReader(log_file.open()))
    assert [row["alignment"] for row in rows] == ["nan", str(second["alignment"])]


def run_epochs(monitor, model, epochs):
    """Drive the callback as fit does; returns the logs of each epoch."""
    monitor.set_model(model)
    monitor.on_train_begin()
    all_logs = []
    for epoch in range(epochs):
        monitor.on_epoch_begin(epoch)
        logs = {"loss": 1.0}
        monitor.on_epoch_end(epoch, logs)
        all_logs.append(logs)
    monitor.on_train_end()
    return all_logs


def test_collapse_warning_fires_once_per_onset_on_a_constant_encoder(rng, capsys):
    view_1, view_2 = held_out(rng)
    encoder = ToyEncoder(constant=True)
    monitor = SSLHealthMonitor(view_1, view_2)
    logs = run_epochs(monitor, ToyMethod(encoder), epochs=2)
    assert logs[0]["embedding_std"] < 1e-6 and logs[0]["embedding_rank"] == pytest.approx(1.0, abs=1e-3)
    lines = [line for line in capsys.readouterr().out.splitlines() if "collapsed" in line]
    assert len(lines) == 1 and lines[0].startswith("Warning: the embeddings collapsed at epoch 1 (embedding_std ")
    assert "< 0.01/sqrt(D) = 0.00354); see embedding_std and embedding_rank in training_log.csv" in lines[0]
    # Recovered, then collapsed again: a second onset, a second line.
    encoder.constant = False
    run_epochs(monitor, ToyMethod(encoder), epochs=1)
    encoder.constant = True
    run_epochs(monitor, ToyMethod(encoder), epochs=1)
    assert sum("collapsed" in line for line in capsys.readouterr().out.splitlines()) == 1


def test_no_warning_on_a_random_encoder(rng, capsys):
    view_1, view_2 = held_out(rng)
    monitor = SSLHealthMonitor(view_1, view_2)
    (logs,) = run_epochs(monitor, ToyMethod(ToyEncoder()), epochs=1)
    assert collapse_reason(logs, 8) is None and not monitor.collapsed
    assert "collapsed" not in capsys.readouterr().out


def test_collapse_reason_thresholds():
    dim = 64  # 0.01 / sqrt(D) = 0.00125
    assert collapse_reason({"embedding_std": 0.002, "embedding_rank": 3.0}, dim) is None
    assert "embedding_std" in collapse_reason({"embedding_std": 0.001, "embedding_rank": 3.0}, dim)
    assert "embedding_rank 1.2 < 1.5" in collapse_reason({"embedding_std": 0.1, "embedding_rank": 1.2}, dim)


class FakeSource:
    def __init__(self, rng):
        self.images = {name: rng.random((12, 12)).astype("float32") for name in "abcde"}

    def load_image(self, record, image_size):
        return self.images[record][:image_size, :image_size]


def test_health_monitor_from_held_out_records(rng):
    source = FakeSource(rng)
    (monitor,) = health_monitor(source, list("abcde"), image_size=8, seed=1, every_n_epochs=3, max_images=4)
    assert monitor.images_view_1.shape == (4, 8, 8, 1) and monitor.every_n_epochs == 3
    chosen = [list("abcde")[i] for i in np.random.default_rng(1).permutation(5)[:4]]  # as probe_monitor
    expected, _ = two_views(np.stack([source.images[r][:8, :8, None] for r in chosen]), seed=1)
    np.testing.assert_array_equal(monitor.images_view_1, expected)
    assert health_monitor(source, ["a"], image_size=8) == []


# === Figure ===


@pytest.mark.backend_free
def test_training_curves_figure(tmp_path):
    rows = []
    for epoch in range(1, 7):
        measured = epoch % 2 == 0
        rows.append({"epoch": epoch, "step": 10 * epoch, "loss": 3.0 / epoch, "global_loss": 1.0 / epoch,
                     "matching_loss": 2.0 / epoch, "skipped_steps": 0,
                     "embedding_std": 0.05 + 0.01 * epoch if measured else float("nan"),
                     "embedding_rank": 5.0 + epoch if measured else float("nan"),
                     "alignment": 0.5 / epoch if measured else float("nan"),
                     "uniformity": -0.5 * epoch if measured else float("nan")})
    path = plot_training_curves(rows, tmp_path / "reports" / "training_curves.png")
    assert path == tmp_path / "reports" / "training_curves.png"
    assert_png_drawn(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["training_curves.png"]  # no temporary left
    # Rows read back from training_log.csv hold strings ("nan" too); absent columns get no panel.
    text_rows = [{key: str(value) for key, value in row.items() if key in ("epoch", "loss", "embedding_rank")}
                 for row in rows]
    assert_png_drawn(plot_training_curves(text_rows, tmp_path / "losses.png"))
    with pytest.raises(ValueError, match="epoch"):
        plot_training_curves([], tmp_path / "bad.png")
