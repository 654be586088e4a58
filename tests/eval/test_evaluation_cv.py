"""Repeated k-fold evaluation with a paired Wilcoxon test between encoders (paper 001 §4.2, Tables 4-5)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

from kmedssl.eval.evaluate import cv_view, parse_cv


@pytest.fixture(autouse=True)
def _test_cohort_cache(tmp_path, monkeypatch):
    """Nothing here renders the phantom test cohort (cross-validation stays on the training split); should a
    test do so, it goes to a temporary cache, never into ~/.cache."""
    monkeypatch.setenv("KMEDSSL_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from kmedssl import recipes

    result = recipes.pretrain("spcl", epochs=1, steps_per_epoch=1, batch_size=8, data_size=40,
                              output_dir=tmp_path_factory.mktemp("cv") / "run", verbose=0)
    return result.run_dir


@pytest.mark.backend_free
def test_cv_arguments_are_validated_and_repeats_default_to_ten():
    assert parse_cv(None, None, None, None, None) is None
    assert parse_cv(5, None, None, 100, None) == (5, 10)
    assert parse_cv(2, 3, "runs/other", None, None) == (2, 3)
    for folds, repeats, compare, labels, test_data in [(1, 2, None, None, None), (2, 0, None, None, None),
                                                       (None, 2, None, None, None), (None, None, "x", None, None),
                                                       (2, 2, None, [5, 10], None), (2, 2, None, None, "dir")]:
        with pytest.raises(ValueError, match="Expected"):
            parse_cv(folds, repeats, compare, labels, test_data)


@pytest.mark.backend_free
def test_cv_scores_frontal_or_the_first_requested_image_view():
    assert cv_view(("frontal", "lateral", "ensemble")) == "frontal"
    assert cv_view(("ensemble", "lateral")) == "lateral"
    assert cv_view(("ensemble",)) == "frontal"


@pytest.mark.slow
def test_cv_summarises_repeats_and_wilcoxon_tests_the_paired_means(run_dir, tmp_path):
    from kmedssl import recipes

    calls = []
    report = recipes.evaluate(run_dir, folds=2, repeats=2, compare="random", views=("frontal",),
                              output_dir=tmp_path, progress=lambda *call: calls.append(call))
    cv = report["cv"]
    assert [c[0] for c in calls] == list(range(2 * (1 + 2 * 2) + 1)) + [11] and calls[-1] == (11, 11, "done")
    assert not (tmp_path / "cache").exists()  # no test cohort with folds
    assert (cv["folds"], cv["repeats"], cv["view"]) == (2, 2, "frontal")
    encoder, random_init = cv["methods"]
    for entry in (encoder, random_init):
        fold_auroc = np.asarray(entry["fold_auroc"])  # (repeats, folds)
        assert fold_auroc.shape == (2, 2) and np.all((fold_auroc >= 0) & (fold_auroc <= 1))
        np.testing.assert_allclose(entry["repeat_means"], fold_auroc.mean(axis=1))
        np.testing.assert_allclose(entry["mean"], fold_auroc.mean())
        np.testing.assert_allclose(entry["std"], np.std(fold_auroc.mean(axis=1), ddof=1))
    a, b = np.asarray(encoder["repeat_means"]), np.asarray(random_init["repeat_means"])
    expected = 1.0 if np.all(a == b) else stats.wilcoxon(a, b).pvalue
    assert cv["wilcoxon"]["p_value"] == pytest.approx(expected)
    assert report["macro_auroc"] == pytest.approx(encoder["mean"])
    assert json.loads((tmp_path / "cv_linear_probe.json").read_text())["cv"]["methods"][1]["name"] == "random-init"
    table = (tmp_path / "cv_linear_probe.md").read_text()
    assert "| random-init |" in table and f"{cv['wilcoxon']['p_value']:.4g} |" in table


@pytest.mark.slow
def test_cv_compares_encoders_on_the_same_folds_and_seeds(run_dir, tmp_path):
    from kmedssl import recipes

    report = recipes.evaluate(run_dir, folds=2, repeats=2, compare=run_dir, views=("frontal",), output_dir=tmp_path)
    first, second = report["cv"]["methods"]
    assert first["fold_auroc"] == second["fold_auroc"]  # same encoder, folds and seeds: identical scores
    assert report["cv"]["wilcoxon"]["p_value"] == 1.0


@pytest.mark.slow
def test_cli_cv_prints_means_and_the_p_value(run_dir):
    from kmedssl.cli import main

    result = CliRunner().invoke(main, ["evaluate", str(run_dir), "--cv", "2x2", "--compare", "random",
                                       "--views", "frontal"])
    assert result.exit_code == 0, result.output
    assert "2 x 2-fold cross-validation" in result.stdout and "p = " in result.stdout
    assert "repeat 2/2, fold 2/2" in result.stderr  # progress
    assert (run_dir / "reports" / "cv_linear_probe.md").is_file()
    bad = CliRunner().invoke(main, ["evaluate", str(run_dir), "--cv", "5by10"])
    assert bad.exit_code != 0 and "FOLDSxREPEATS" in bad.output


@pytest.mark.slow
def test_cv_fine_tunes_per_fold(run_dir, tmp_path):
    from kmedssl import recipes

    report = recipes.evaluate(run_dir, protocol="finetune", labels=12, folds=2, repeats=1, views=("frontal",),
                              output_dir=tmp_path)
    fold_auroc = np.asarray(report["cv"]["methods"][0]["fold_auroc"])
    assert fold_auroc.shape == (1, 2) and np.all((fold_auroc >= 0) & (fold_auroc <= 1))
    assert (tmp_path / "cv_finetune.md").is_file()
