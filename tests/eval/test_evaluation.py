"""Evaluation pieces: label budgets, late fusion per study, AUROC bookkeeping, intervals and paired
differences in the reports, the phantom test cohort."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from kmedssl.data.records import ImageRecord
from kmedssl.eval import macro_auroc, per_label_auroc
from kmedssl.eval.evaluate import label_budget, study_scores

TEST_SIZE = 100  # studies of the phantom test cohort in these tests (2,000 by default)


@pytest.fixture(scope="module")
def cohort_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _test_cohort_cache(cohort_cache, monkeypatch):
    """The phantom test cohort is rendered once per module into a temporary cache, never into ~/.cache."""
    monkeypatch.setenv("KMEDSSL_CACHE", str(cohort_cache))


def records(num_studies=20):
    return [ImageRecord(f"{s}-{v}", f"p{s // 2}", f"s{s}", v, "XR", "chest", (float(s % 2),))
            for s in range(num_studies) for v in ("PA", "LATERAL")]


def studies(rs):
    return {(r.subject_id, r.study_id) for r in rs}


@pytest.mark.backend_free
def test_label_budgets_are_nested_seeded_and_whole_studies():
    rs = records()
    small, large = label_budget(rs, 5, seed=1), label_budget(rs, 12, seed=1)
    assert len(studies(small)) == 5 and len(studies(large)) == 12
    assert studies(small) <= studies(large)
    assert len(small) == 10  # both images of every chosen study
    assert studies(label_budget(rs, 0.25, seed=1)) == studies(small)  # fraction of 20 studies = 5
    assert studies(label_budget(rs, 5, seed=2)) != studies(small)
    assert label_budget(rs, None) == rs
    with pytest.raises(ValueError, match="label budget"):
        label_budget(rs, 21)


@pytest.mark.backend_free
def test_late_fusion_is_the_mean_per_study():
    rs = [ImageRecord("a", "p", "s1", "PA", "XR", "chest"), ImageRecord("b", "p", "s1", "AP", "XR", "chest"),
          ImageRecord("c", "p", "s2", "PA", "XR", "chest")]
    scores = np.asarray([[0.2], [0.6], [0.9]])
    fused = study_scores(rs, scores)
    np.testing.assert_allclose(fused[("p", "s1")], [0.4])
    np.testing.assert_allclose(fused[("p", "s2")], [0.9])


@pytest.mark.backend_free
def test_per_label_auroc_matches_sklearn_and_skips_single_class_labels():
    rng = np.random.default_rng(0)
    labels = np.stack([rng.integers(0, 2, 50), np.zeros(50)], axis=1).astype("float32")
    scores = rng.random((50, 2))
    per_label = per_label_auroc(labels, scores, ("a", "constant"))
    assert per_label["a"] == pytest.approx(roc_auc_score(labels[:, 0], scores[:, 0]))
    assert per_label["constant"] is None
    assert macro_auroc(per_label) == pytest.approx(per_label["a"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from kmedssl import recipes

    result = recipes.pretrain("spcl", epochs=1, steps_per_epoch=1, batch_size=8, data_size=40,
                              output_dir=tmp_path_factory.mktemp("eval") / "run", verbose=0)
    return result.run_dir


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["linear", "finetune"])
def test_evaluate_writes_reports_and_figures(protocol, tiny_run):
    from kmedssl import recipes

    report = recipes.evaluate(tiny_run, protocol=protocol, labels=20, views=("frontal",), test_size=TEST_SIZE)
    assert 0.0 <= report["macro_auroc"] <= 1.0
    ci = report["views"]["frontal"]["macro_auroc_ci"]
    # the interval's estimate is the rank-based AUROC, sklearn's macro AUROC to rounding
    assert ci["estimate"] == pytest.approx(report["macro_auroc"], abs=1e-12)
    assert ci["low"] <= ci["high"] and ci["n_resamples"] == 1000
    assert set(report["views"]["frontal"]["subgroups"]) == {"sex", "age", "largest_gap"}
    reports = tiny_run / "reports"
    stem = "linear_probe" if protocol == "linear" else "finetune"
    for name in (f"{stem}.json", f"{stem}.md", f"{stem}_scores.npz", f"roc_{stem}_frontal.png",
                 "embedding_frontal.png"):
        assert (reports / name).stat().st_size > 0, name


@pytest.mark.backend_free
def test_label_names_must_match_or_one_list_be_a_subset():
    from kmedssl.eval.evaluate import match_labels, select_labels

    assert match_labels(("a", "b", "c"), ("a", "b", "c")) == ("a", "b", "c")
    assert match_labels(("a", "b", "c"), ("c", "a")) == ("a", "c")
    assert match_labels(("c", "a"), ("a", "b", "c")) == ("c", "a")
    with pytest.raises(ValueError, match=r"\['a', 'b'\].*\['x', 'y'\]"):
        match_labels(("a", "b"), ("x", "y"))
    record = ImageRecord("i", "p", "s", "PA", "XR", "chest", (1.0, 0.0, 1.0))
    assert select_labels([record], ("a", "b", "c"), ("c", "b"))[0].labels == (1.0, 0.0)


@pytest.mark.backend_free
def test_budget_axis_uses_fractions_or_counts_of_studies():
    from kmedssl.eval.evaluate import budget_axis

    rs = records()
    assert budget_axis([0.1, 0.5, None], rs) == [0.1, 0.5, 1.0]
    assert budget_axis([5, 0.5, None], rs) == [5.0, 10.0, 20.0]


@pytest.mark.slow
def test_label_budget_list_writes_the_auroc_vs_budget_figure(tiny_run, tmp_path):
    from kmedssl import recipes

    report = recipes.evaluate(tiny_run, labels=[5, 10], views=("frontal",), baseline="random", output_dir=tmp_path,
                              test_size=TEST_SIZE)
    single = recipes.evaluate(tiny_run, labels=10, views=("frontal",), test_size=TEST_SIZE)
    assert [b["labels"] for b in report["budgets"]] == [5, 10] and [b["x"] for b in report["budgets"]] == [5.0, 10.0]
    assert report["budgets"][-1]["macro_auroc"] == pytest.approx(single["macro_auroc"])
    assert report["macro_auroc"] == pytest.approx(single["macro_auroc"])  # headline: the last budget
    assert report["budgets"][-1]["macro_auroc_ci"] == single["macro_auroc_ci"]  # same test set, same resamples
    for entry in report["budgets"]:
        assert 0.0 <= entry["baseline_macro_auroc"] <= 1.0
        for ci in (entry["macro_auroc_ci"], entry["views_ci"]["frontal"], entry["baseline_macro_auroc_ci"]):
            assert ci["low"] <= ci["high"]
        difference = entry["baseline_difference"]
        assert difference["estimate"] == pytest.approx(entry["macro_auroc"] - entry["baseline_macro_auroc"])
        assert 0.0 < difference["p_value"] <= 1.0
    assert (tmp_path / "auroc_vs_budget.png").stat().st_size > 0
    table = (tmp_path / "linear_probe.md").read_text()
    assert "| 5 |" in table and "], p = " in table


@pytest.mark.slow
def test_cross_source_fits_on_one_source_and_scores_the_other(tiny_run, tmp_path):
    from kmedssl import recipes
    from kmedssl.data.formats import read_dataset
    from kmedssl.data.phantom.writer import write_mimic_cxr

    train_dir = write_mimic_cxr(tmp_path / "a", num_subjects=24, image_size=32, seed=1)
    test_dir = write_mimic_cxr(tmp_path / "b", num_subjects=24, image_size=32, seed=2)
    report = recipes.evaluate(tiny_run, data=str(train_dir), test_data=str(test_dir), views=("frontal",),
                              output_dir=tmp_path / "reports")
    target = read_dataset(str(test_dir))
    test_records = [r for r in target.records if target.splits is None or target.splits.get(r.subject_id) == "test"]
    assert report["views"]["frontal"]["n_test"] == sum(r.is_frontal for r in test_records)
    assert report["test_data"]["label_names"] == list(target.label_names)
    assert "on " + str(test_dir) in (tmp_path / "reports" / "linear_probe.md").read_text()
    with pytest.raises(ValueError, match="cardiomegaly.*Cardiomegaly"):
        recipes.evaluate(tiny_run, test_data=str(test_dir), views=("frontal",))


@pytest.mark.slow
def test_cli_takes_a_comma_list_of_label_budgets(tiny_run):
    from click.testing import CliRunner

    from kmedssl.cli import main

    result = CliRunner().invoke(main, ["evaluate", str(tiny_run), "--labels", "5,all", "--views", "frontal",
                                       "--test-size", str(TEST_SIZE)])
    assert result.exit_code == 0, result.output
    assert "\n5 " in result.stdout and "\nall " in result.stdout
    assert (tiny_run / "reports" / "auroc_vs_budget.png").stat().st_size > 0
    bad = CliRunner().invoke(main, ["evaluate", str(tiny_run), "--labels", "5,many"])
    assert bad.exit_code != 0 and "--labels" in bad.output


@pytest.mark.slow
def test_property_probes_are_reported_for_the_encoder_and_the_baseline(tiny_run, tmp_path):
    from kmedssl import recipes

    report = recipes.evaluate(tiny_run, views=("frontal",), baseline="random", property_probes=True,
                              output_dir=tmp_path, test_size=TEST_SIZE)
    probes = report["property_probes"]
    assert set(probes) == {"encoder", "baseline"}
    for entry in probes.values():
        assert 0.0 <= entry["decompositionality_accuracy"] <= 1.0 and 0.0 <= entry["retrieval_accuracy"] <= 1.0
        assert -1.0 <= entry["compositionality_mean_cosine"]["4"] <= 1.0
        assert entry["chance"] == pytest.approx(1.0 / entry["batch_size"])
    assert "| random init |" in (tmp_path / "property_probes.md").read_text()
    assert (tmp_path / "compositionality.png").stat().st_size > 0
    with pytest.raises(ValueError, match="property_probes=False with folds"):
        recipes.evaluate(tiny_run, folds=2, repeats=1, property_probes=True)


@pytest.mark.backend_free
def test_view_reports_carry_intervals_and_a_model_against_itself_differs_by_zero():
    from kmedssl.eval.evaluate import ViewScores, difference_report, view_report

    rng = np.random.default_rng(0)
    groups = np.repeat([f"p{s}/s{s}" for s in range(60)], 2)  # two images per study
    labels = np.repeat(rng.integers(0, 2, (60, 3)), 2, axis=0).astype("float32")
    labels[:, 2] = 0  # a single class: no AUROC, no interval
    scores = labels + rng.normal(0, 1.0, labels.shape)
    report = view_report(labels, scores, ("a", "b", "c"), groups, seed=3)
    ci = report["macro_auroc_ci"]
    assert ci["estimate"] == pytest.approx(report["macro_auroc"]) and ci["low"] <= ci["high"]
    assert (ci["n_resamples"], ci["n_groups"], report["n_test"], report["n_test_studies"]) == (1000, 60, 120, 60)
    assert report["per_label_auroc_ci"]["c"] is None
    assert report["per_label_auroc_ci"]["a"]["estimate"] == pytest.approx(report["per_label_auroc"]["a"])
    assert "macro_auroc_ci" not in view_report(labels, scores, ("a", "b", "c"))  # no groups: no interval
    same = ViewScores(labels, scores, groups)
    difference = difference_report(same, ViewScores(labels, scores.copy(), groups), ("a", "b", "c"), seed=3)
    assert (difference["estimate"], difference["low"], difference["high"], difference["p_value"]) == (0, 0, 0, 1)
    assert difference["per_label"]["a"]["p_value"] == 1.0 and difference["per_label"]["c"] is None
    better = difference_report(ViewScores(labels, labels + 0.1 * scores, groups), same, ("a", "b", "c"), seed=3)
    assert better["low"] > 0 and better["p_value"] < 0.05
    with pytest.raises(ValueError, match="same test rows"):
        difference_report(same, ViewScores(labels, scores, groups[::-1]), ("a", "b", "c"), seed=3)


@pytest.mark.backend_free
def test_evaluate_rejects_unknown_baselines_and_test_sizes():
    from kmedssl.eval.evaluate import evaluate

    with pytest.raises(ValueError, match="baseline None or one of"):
        evaluate("/no/such/run", baseline="imagenet")  # no weights file named
    with pytest.raises(FileNotFoundError, match="^/x.keras: initial weights not found$"):
        evaluate("/no/such/run", baseline="imagenet:/x.keras")  # before the run is read
    with pytest.raises(ValueError, match="test_size"):
        evaluate("/no/such/run", test_size=0)


@pytest.mark.slow
def test_scratch_baseline_on_the_phantom_test_cohort_reports_paired_differences(tiny_run, tmp_path):
    from kmedssl import recipes
    from kmedssl.data.sources import open_source
    from kmedssl.data.test_cohort import PhantomTestSource
    from kmedssl.eval.evaluate import read_scores

    calls = []
    report = recipes.evaluate(tiny_run, labels=10, baseline="scratch", output_dir=tmp_path, test_size=TEST_SIZE,
                              progress=lambda *call: calls.append(call))
    written = json.loads((tmp_path / "linear_probe.json").read_text())
    assert written["test_cohort"]["n_studies"] == TEST_SIZE and written["test_cohort"]["seed"] == 0
    assert written["test_cohort"]["n_images"] == len(PhantomTestSource(size=TEST_SIZE).records)
    baseline = written["baseline"]
    assert (baseline["name"], baseline["kind"], baseline["protocol"]) == ("scratch", "scratch", "linear")
    for entry in (written, baseline):  # headline = ensemble
        assert entry["macro_auroc_ci"] == entry["views"]["ensemble"]["macro_auroc_ci"]
        assert entry["per_label_auroc_ci"].keys() == entry["per_label_auroc"].keys()
        for view in ("frontal", "lateral", "ensemble"):
            ci = entry["views"][view]["macro_auroc_ci"]
            assert ci["low"] <= ci["high"]
            assert ci["estimate"] == pytest.approx(entry["views"][view]["macro_auroc"])
            assert ci["n_groups"] == entry["views"][view]["n_test_studies"] <= TEST_SIZE
        for group in entry["views"]["frontal"]["subgroups"]["sex"].values():
            assert group["macro_ci"]["low"] <= group["macro_ci"]["high"]
    for view in ("frontal", "lateral", "ensemble"):
        difference = baseline["views"][view]["difference"]
        assert difference["estimate"] == pytest.approx(written["views"][view]["macro_auroc"]
                                                       - baseline["views"][view]["macro_auroc"])
        assert difference["low"] <= difference["high"] and 0 < difference["p_value"] <= 1
    assert baseline["difference"] == baseline["views"]["ensemble"]["difference"]
    assert "| difference (pretrained - scratch) |" in (tmp_path / "linear_probe.md").read_text()
    # The test cohort shares no subject with the run's cohort (pretraining and probe training).
    names, scores = read_scores(tmp_path / "linear_probe_scores.npz")
    assert names == list(report["per_label_auroc"]) and set(scores["frontal"]) == {"encoder", "baseline"}
    test_subjects = {group.split("/")[0] for view in scores.values() for group in view["encoder"].groups}
    training = open_source("phantom", kind="chest", size=40, seed=0)
    assert test_subjects and not test_subjects & {r.subject_id for r in training.records}
    assert len(scores["ensemble"]["encoder"].scores) == report["views"]["ensemble"]["n_test"]
    # Progress: a fixed total, announced step by step, then (total, total, "done").
    total = calls[0][1]
    assert [c[0] for c in calls] == list(range(total)) + [total] and all(c[1] == total for c in calls)
    assert calls[-1][2] == "done" and any("bootstrap" in c[2] for c in calls)
    # With the linear protocol, scratch is the random-init copy linear-probed: the same as baseline="random".
    random = recipes.evaluate(tiny_run, labels=10, baseline="random", views=("frontal",), test_size=TEST_SIZE)
    assert random["baseline"]["views"]["frontal"]["macro_auroc_ci"] == baseline["views"]["frontal"]["macro_auroc_ci"]
    assert random["baseline"]["name"] == "random init"


def test_fit_seed_reseeds_the_fine_tuning_runs_alone(tiny_run, tmp_path, monkeypatch):
    """``fit_seed`` is the seed every fit gets, the encoder's and the scratch copy's; the labelled images, the
    scratch weights and the bootstrap keep ``seed``; None means ``seed``."""
    import kmedssl.eval.evaluate as evaluate_module
    from kmedssl import recipes

    calls, fit_finetune = [], evaluate_module.fit_finetune

    def recorded(encoder, images, labels, recipe=None, seed=0):
        weights = float(sum(np.sum(w, dtype="float64") for w in encoder.get_weights()))
        calls.append((seed, images.tobytes(), labels.tobytes(), weights))
        return fit_finetune(encoder, images, labels, recipe=recipe, seed=seed, epochs=1)

    monkeypatch.setattr(evaluate_module, "fit_finetune", recorded)
    common = dict(protocol="finetune", labels=10, baseline="scratch", views=("frontal",), test_size=TEST_SIZE, seed=3)
    default = recipes.evaluate(tiny_run, output_dir=tmp_path / "default", **common)
    other = recipes.evaluate(tiny_run, output_dir=tmp_path / "other", fit_seed=5, **common)
    assert [call[0] for call in calls] == [3, 3, 5, 5]  # encoder, then scratch; per evaluation
    assert calls[0][1:] == calls[2][1:] and calls[1][1:] == calls[3][1:]  # same images, labels, weights
    assert calls[0][3] != calls[1][3]  # (the pretrained and the scratch encoder do differ)
    assert (default["seed"], default["fit_seed"], other["seed"], other["fit_seed"]) == (3, 3, 3, 5)
    with pytest.raises(ValueError, match="fit_seed"):
        recipes.evaluate(tiny_run, folds=2, repeats=1, fit_seed=1)


@pytest.mark.slow
def test_a_baseline_initialised_from_the_encoders_own_exported_weights_scores_the_same(tiny_run, tmp_path):
    from kmedssl import recipes
    from kmedssl.interop import export

    weights = next(f for f in export(tiny_run, "safetensors", tmp_path / "export") if f.suffix == ".safetensors")
    report = recipes.evaluate(tiny_run, labels=10, baseline=f"init:{weights}", views=("frontal",),
                              test_size=TEST_SIZE)
    baseline = report["baseline"]
    assert (baseline["kind"], baseline["name"], baseline["protocol"]) == ("init", f"init from {weights.name}",
                                                                          "linear")
    assert baseline["weights"] == str(weights)
    assert baseline["views"]["frontal"]["macro_auroc"] == report["views"]["frontal"]["macro_auroc"]
    difference = baseline["views"]["frontal"]["difference"]
    assert difference["estimate"] == difference["low"] == difference["high"] == 0.0
    # A random-init copy scores differently on the same rows: the file, not chance, made them equal.
    scratch = recipes.evaluate(tiny_run, labels=10, baseline="random", views=("frontal",), test_size=TEST_SIZE)
    assert scratch["baseline"]["views"]["frontal"]["macro_auroc"] != report["views"]["frontal"]["macro_auroc"]
