"""Report figures: each writes a non-trivial PNG (a drawing, not a blank canvas)."""

import numpy as np
import pytest

from kmedssl.eval.plots import plot_auroc_vs_budget, plot_embedding, plot_roc_curves

pytestmark = pytest.mark.backend_free

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png_drawn(path):
    from matplotlib import image

    assert path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = image.imread(path)  # (H, W, 4) in [0, 1]
    assert pixels.shape[0] > 300 and pixels.shape[1] > 400
    grey = pixels[..., :3].mean(axis=-1)
    assert (grey < 0.5).mean() > 0.005  # text, axes and lines
    assert (np.ptp(pixels[..., :3], axis=-1) > 0.2).mean() > 0.002  # coloured curves or points


def test_roc_curves(tmp_path, rng):
    labels = rng.integers(0, 2, size=(80, 3)).astype(float)
    labels[:, 2] = 0  # one class only: listed as n/a
    scores = labels + rng.normal(0, 0.8, size=labels.shape)
    path = plot_roc_curves(labels, scores, ["Effusion", "Edema", "Fracture"], tmp_path / "roc.png", "ROC (test)")
    assert path == tmp_path / "roc.png"
    assert_png_drawn(path)
    intervals = {"Effusion": (0.61, 0.74), "Edema": (0.58, 0.71)}  # 95 % intervals, written in the legend
    assert_png_drawn(plot_roc_curves(labels, scores, ["Effusion", "Edema", "Fracture"], tmp_path / "ci.png",
                                     "ROC (test)", intervals=intervals))
    with pytest.raises(ValueError, match="same shape"):
        plot_roc_curves(labels, scores[:, :2], ["a", "b", "c"], tmp_path / "bad.png", "bad")


def test_auroc_vs_budget_counts_and_fractions(tmp_path):
    counts = {"MVMAE": {5000: 0.71, 10000: 0.74, 25000: 0.77, 50000: 0.79, 102000: 0.80},
              "Supervised": {5000: 0.62, 10000: 0.67, 25000: 0.72, 50000: 0.76, 102000: 0.79}}
    assert_png_drawn(plot_auroc_vs_budget(counts, tmp_path / "reports" / "budget.png", "Frontal"))
    fractions = {"S-PCL": {0.01: 0.70, 0.1: 0.78, 1.0: 0.82}, "scratch": {0.01: 0.55, 0.1: 0.64, 1.0: 0.75}}
    assert_png_drawn(plot_auroc_vs_budget(fractions, tmp_path / "fractions.png", "Fractions"))
    with pytest.raises(ValueError, match="numeric budgets"):
        plot_auroc_vs_budget({"a": {"all": 0.7}}, tmp_path / "bad.png", "bad")


def test_embedding_tsne(tmp_path, rng):
    centres = np.asarray([[4.0] * 8, [-4.0] * 8, [0.0] * 4 + [4.0] * 4])
    kinds = rng.integers(0, 3, size=60)
    features = centres[kinds] + rng.normal(size=(60, 8))
    names = np.asarray(["CT lung", "MR knee", "US breast"])[kinds].tolist()
    assert_png_drawn(plot_embedding(features, names, tmp_path / "tsne.png", "t-SNE by modality"))
    with pytest.raises(ValueError, match="method"):
        plot_embedding(features, names, tmp_path / "bad.png", "bad", method="pca")


def test_embedding_umap_needs_the_package(tmp_path, rng):
    try:
        import umap  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="umap-learn"):
            plot_embedding(rng.normal(size=(10, 4)), ["a"] * 10, tmp_path / "u.png", "u", method="umap")
    else:
        assert_png_drawn(plot_embedding(rng.normal(size=(40, 4)), ["a", "b"] * 20, tmp_path / "u.png", "u",
                                        method="umap"))


def test_auroc_vs_budget_draws_intervals(tmp_path):
    results = {"pretrained": {0.01: 0.62, 0.1: 0.70, 1.0: 0.78}, "scratch": {0.01: 0.55, 0.1: 0.61, 1.0: 0.74}}
    intervals = {"pretrained": {0.01: (0.58, 0.66), 0.1: (0.67, 0.73), 1.0: (0.76, 0.80)},
                 "scratch": {0.01: (0.50, 0.60), 0.1: (0.57, 0.65), 1.0: (None, None)}}  # no bar at 100 %
    plain = plot_auroc_vs_budget(results, tmp_path / "plain.png", "Fractions")
    banded = plot_auroc_vs_budget(results, tmp_path / "banded.png", "Fractions", intervals=intervals)
    assert_png_drawn(banded)
    from matplotlib import image

    def tinted(path):  # light, coloured pixels: the shaded bands
        pixels = image.imread(path)[..., :3]
        return ((np.ptp(pixels, axis=-1) > 0.03) & (pixels.min(axis=-1) > 0.7)).sum()

    assert tinted(banded) > tinted(plain) + 500
    with pytest.raises(ValueError, match="intervals for methods"):
        plot_auroc_vs_budget(results, tmp_path / "bad.png", "bad", intervals={"other": {0.1: (0.1, 0.2)}})
    with pytest.raises(ValueError, match="intervals"):
        plot_auroc_vs_budget(results, tmp_path / "bad.png", "bad", intervals={"scratch": {0.1: 0.5}})
