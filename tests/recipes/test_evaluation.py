"""Evaluation pieces: label budgets, late fusion per study, AUROC bookkeeping."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from kmedssl.data.records import ImageRecord
from kmedssl.eval import macro_auroc, per_label_auroc
from kmedssl.eval.evaluate import label_budget, study_scores




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

    report = recipes.evaluate(tiny_run, protocol=protocol, labels=20, views=("frontal",))
    assert 0.0 <= report["macro_auroc"] <= 1.0
    assert set(report["views"]["frontal"]["subgroups"]) == {"sex", "age", "largest_gap"}
    reports = tiny_run / "reports"
    stem = "linear_probe" if protocol == "linear" else "finetune"
    for name in (f"{stem}.json", f"{stem}.md", f"roc_{stem}_frontal.png", "embedding_frontal.png"):
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

    report = recipes.evaluate(tiny_run, labels=[5, 10], views=("frontal",), baseline="random", output_dir=tmp_path)
    single = recipes.evaluate(tiny_run, labels=10, views=("frontal",))
    assert [b["labels"] for b in report["budgets"]] == [5, 10] and [b["x"] for b in report["budgets"]] == [5.0, 10.0]
    assert report["budgets"][-1]["macro_auroc"] == pytest.approx(single["macro_auroc"])
    assert report["macro_auroc"] == pytest.approx(single["macro_auroc"])  # headline: the last budget
    assert all(0.0 <= b["baseline_macro_auroc"] <= 1.0 for b in report["budgets"])
    assert (tmp_path / "auroc_vs_budget.png").stat().st_size > 0
    assert "| 5 |" in (tmp_path / "linear_probe.md").read_text()


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

    result = CliRunner().invoke(main, ["evaluate", str(tiny_run), "--labels", "5,all", "--views", "frontal"])
    assert result.exit_code == 0, result.output
    assert "\n5 " in result.output and "\nall " in result.output
    assert (tiny_run / "reports" / "auroc_vs_budget.png").stat().st_size > 0
    bad = CliRunner().invoke(main, ["evaluate", str(tiny_run), "--labels", "5,many"])
    assert bad.exit_code != 0 and "--labels" in bad.output


@pytest.mark.slow
def test_property_probes_are_reported_for_the_encoder_and_the_baseline(tiny_run, tmp_path):
    from kmedssl import recipes

    report = recipes.evaluate(tiny_run, views=("frontal",), baseline="random", property_probes=True,
                              output_dir=tmp_path)
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
