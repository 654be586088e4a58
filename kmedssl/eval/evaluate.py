"""``evaluate``: linear-probe a pretrained encoder on the phantom pathology labels (SPEC §5, §9), across
sources (paper 002 §6), with repeated k-fold and Wilcoxon tests (paper 001 §4.2) and label-budget curves.

Every AUROC of a test set carries a 95 % interval (cluster bootstrap over test studies, ``kmedssl.eval.intervals``)
and every comparison with a baseline the paired difference with its interval and p-value. On the phantom the
test set is its own cohort (``kmedssl.data.test_cohort``), never seen by pretraining or probe training.
"""

import collections
import dataclasses
import json
import pathlib

import keras
import numpy as np

from kmedssl.data.sources import open_source, split_records
from kmedssl.data.test_cohort import TEST_COHORT_SEED, TEST_COHORT_STUDIES, PhantomTestSource
from kmedssl.eval import (
    compare_methods,
    compositionality,
    decompositionality,
    extract_features,
    fit_finetune,
    fit_linear_probe,
    macro_auroc,
    patch_to_image_retrieval,
    per_label_auroc,
    plot_auroc_vs_budget,
    plot_embedding,
    plot_roc_curves,
    plot_similarity_distribution,
    random_init_copy,
    repeated_kfold_indices,
    subgroup_auroc,
    summarize_repeats,
)
from kmedssl.eval.intervals import N_RESAMPLES, auroc_interval, format_interval, paired_difference
from kmedssl.interop import load_into, parse_init
from kmedssl.training import runs
from kmedssl.training.checkpoints import load_model_file

VIEWS = ("frontal", "lateral", "ensemble")
PROTOCOLS = ("linear", "finetune")
BASELINES = ("random", "scratch", "imagenet:PATH", "init:PATH")
# "random": the frozen random-init copy (always a linear probe); "scratch": the random-init copy trained with
# the evaluated protocol (fine-tuned from scratch with "finetune"; the same as "random" with "linear");
# "imagenet:PATH" / "init:PATH": a copy initialised from a weights file, trained with the evaluated protocol.
BASELINE_NAMES = {"random": "random init", "scratch": "scratch", "imagenet": "ImageNet init"}
AGE_BANDS = ((0, 40), (40, 60), (60, 200))  # subgroup_auroc's bands (paper 002 §5-6)
EMBEDDING_POINTS = 1000  # frontal test images in the t-SNE figure (a seeded subset of a larger test set)

ViewScores = collections.namedtuple("ViewScores", "labels scores groups")
ViewScores.__doc__ = """One view's test rows: ``labels`` (N, K), ``scores`` (N, K) and ``groups`` (N,), the study of
every row (``"subject/study"``; the bootstrap resamples studies)."""


class Progress:
    """Calls ``callback(done, total, what)`` as each long step starts, and ``(total, total, "done")`` at the end.

    A no-op when ``callback`` is None. ``total`` is counted before the work starts (``evaluate`` plans its steps).
    """

    def __init__(self, callback, total):
        self.callback, self.total, self.done = callback, int(total), 0

    def __call__(self, what):
        if self.callback is not None:
            self.callback(min(self.done, self.total), self.total, what)
        self.done += 1

    def finish(self):
        if self.callback is not None:
            self.callback(self.total, self.total, "done")


def load_encoder(encoder):
    """``encoder`` as a model, plus the run directory and resolved recipe when it came from a run.

    Accepts a Keras model, a ``.keras`` file or a run directory (its ``encoder.keras``).
    """
    if isinstance(encoder, keras.Model):
        return encoder, None, {}
    path = pathlib.Path(encoder)
    if path.is_dir():
        recipe = runs.read_recipe(path)
        file = path / runs.ENCODER_FILE
        if not file.is_file():
            raise FileNotFoundError(f"{file} not found: the run in {path} has not finished")
        return load_model_file(file), path, recipe
    if path.suffix == ".keras" and path.is_file():
        return load_model_file(path), None, {}
    raise FileNotFoundError(f"Expected a run directory or an ENCODER.keras file. Received: {encoder!r} (not found)")


def label_budget(records, budget, seed=0):
    """The records of a seeded, nested subset of studies: ``budget`` studies (int) or a fraction (float)."""
    if budget is None:
        return list(records)
    studies = sorted({(r.subject_id, r.study_id) for r in records})
    count = int(round(budget * len(studies))) if isinstance(budget, float) and budget <= 1 else int(budget)
    if not 1 <= count <= len(studies):
        raise ValueError(f"Expected a label budget between 1 and {len(studies)} studies. Received: {budget}")
    order = np.random.default_rng(seed).permutation(len(studies))
    chosen = {studies[i] for i in order[:count]}
    return [r for r in records if (r.subject_id, r.study_id) in chosen]


def view_records(records, view):
    return [r for r in records if (r.is_frontal if view == "frontal" else r.is_lateral)]


def fit_predict(protocol, encoder, train_images, train_labels, test_images, seed, finetune_recipe=None):
    """Test-set probabilities of a linear probe on frozen features, or of a copy of the encoder fine-tuned with
    ``finetune_recipe`` (``kmedssl.eval.fit_finetune``'s ``recipe``)."""
    if protocol == "linear":
        predict = fit_linear_probe(extract_features(encoder, train_images), train_labels, seed=seed)
        return predict(extract_features(encoder, test_images))
    return fit_finetune(encoder, train_images, train_labels, recipe=finetune_recipe, seed=seed)(test_images)


def load_images(source, records, image_size):
    """(N, S, S, 1) float32 images of ``records``."""
    return np.stack([source.load_image(r, image_size)[..., None] for r in records])


def label_matrix(records):
    return np.asarray([r.labels for r in records], dtype="float32")  # (N, K)


def probe_view(encoder, sources, train, test, view, image_size, protocol, seed, finetune_recipe=None):
    """Fit on the ``view`` images of ``train``; the ``view`` test records and their probabilities.

    ``sources`` is ``(train_source, test_source)``: the images of ``train`` and ``test`` come from each.
    """
    train_records, test_records = view_records(train, view), view_records(test, view)
    if not train_records or not test_records:
        raise ValueError(f"Expected {view} images in the training and test splits. Received: "
                         f"{len(train_records)} and {len(test_records)}; choose other --views")
    train_images = load_images(sources[0], train_records, image_size)
    test_images = load_images(sources[1], test_records, image_size)
    return test_records, fit_predict(protocol, encoder, train_images, label_matrix(train_records), test_images, seed,
                                     finetune_recipe)


def study_scores(records, scores):
    """Mean score per study: {(subject, study): (K,)}."""
    grouped = collections.defaultdict(list)
    for record, score in zip(records, scores):
        grouped[(record.subject_id, record.study_id)].append(score)
    return {key: np.mean(values, axis=0) for key, values in grouped.items()}


def study_group(record):
    """The bootstrap group of a test row: its study, ``"subject/study"``."""
    return f"{record.subject_id}/{record.study_id}"


def interval_entries(interval):
    """``{"macro_auroc_ci": {...}, "per_label_auroc_ci": {name: {...} | None}}`` of an ``Interval``."""
    macro = interval.to_dict()
    per_label = macro.pop("per_label", {})
    return {"macro_auroc_ci": macro, "per_label_auroc_ci": per_label}


def view_report(labels, scores, label_names, groups=None, seed=0):
    """Per-label and macro AUROC; with ``groups`` (the study of every row) also their 95 % intervals
    (``macro_auroc_ci``, ``per_label_auroc_ci``: bootstrap over the studies, ``seed``) and ``n_test_studies``."""
    per_label = per_label_auroc(labels, scores, label_names)
    report = {"macro_auroc": macro_auroc(per_label), "per_label_auroc": per_label, "n_test": int(len(labels))}
    if groups is not None:
        report.update(interval_entries(auroc_interval(labels, scores, groups, label_names, seed=seed)),
                      n_test_studies=len(set(groups)))
    return report


def subgroup_report(records, view_scores, label_names, seed):
    """``subgroup_auroc`` by sex and age band, each group's macro AUROC with its interval (``macro_ci``)."""
    report = subgroup_auroc(records, view_scores.scores, label_names, age_bands=AGE_BANDS)
    keys = {"sex": np.asarray([r.sex or None for r in records], dtype=object),
            "age": np.asarray([age_band_name(r.age) for r in records], dtype=object)}
    for attribute in ("sex", "age"):
        for group, entry in report[attribute].items():
            members = keys[attribute] == group
            interval = auroc_interval(view_scores.labels[members], view_scores.scores[members],
                                      view_scores.groups[members], seed=seed)
            ci = interval.to_dict()
            ci.pop("per_label", None)
            entry["macro_ci"] = ci
    return report


def age_band_name(age):
    """The ``AGE_BANDS`` band of ``age`` as ``subgroup_auroc`` names it; None when unknown or outside."""
    if age is None or np.isnan(age):
        return None
    return next((f"{lo:g}-{hi:g}" for lo, hi in AGE_BANDS if lo <= age < hi), None)


def predict_views(encoder, sources, train, test, views, image_size, protocol, seed, step, what, finetune_recipe=None):
    """Test-set scores of every requested view: ``({view: ViewScores}, {image view: test records})``.

    ``ensemble`` fuses the frontal and lateral probabilities per study (the mean of each view's image
    probabilities, then of the two views) on the studies that have both.
    """
    study_labels = {(r.subject_id, r.study_id): np.asarray(r.labels, "float32") for r in test}
    per_view_scores, scores, records_by_view = {}, {}, {}
    for view in ("frontal", "lateral"):
        if view in views or "ensemble" in views:
            step(f"{view}: {what}")
            records, predicted = probe_view(encoder, sources, train, test, view, image_size, protocol, seed,
                                            finetune_recipe)
            per_view_scores[view] = study_scores(records, predicted)
            if view in views:
                groups = np.asarray([study_group(r) for r in records])
                scores[view] = ViewScores(label_matrix(records), np.asarray(predicted, "float64"), groups)
                records_by_view[view] = records
    if "ensemble" in views:
        both = sorted(set(per_view_scores["frontal"]) & set(per_view_scores["lateral"]))
        if not both:
            raise ValueError("Expected test studies with both a frontal and a lateral image for the ensemble. "
                             "Received: none; choose other --views")
        fused = np.stack([(per_view_scores["frontal"][k] + per_view_scores["lateral"][k]) / 2 for k in both])
        groups = np.asarray([f"{subject}/{study}" for subject, study in both])
        scores["ensemble"] = ViewScores(np.stack([study_labels[k] for k in both]), fused.astype("float64"), groups)
    return scores, records_by_view


def probe_report(encoder, sources, train, test, views, image_size, protocol, seed, label_names, step=None,
                 what="probe", finetune_recipe=None, fit_seed=None):
    """Per-view AUROC reports with 95 % intervals (+ sex/age subgroups per image view); ``ensemble`` fuses the
    frontal and lateral study probabilities (mean). Also returns ``{view: ViewScores}`` (figures, paired
    differences). ``step(what)`` is called as each long step starts. The probes (fine-tuning runs) are seeded
    with ``fit_seed`` (None: ``seed``), the bootstrap with ``seed``."""
    step = step or (lambda what: None)
    scores, records = predict_views(encoder, sources, train, test, views, image_size, protocol,
                                    seed if fit_seed is None else fit_seed, step, what, finetune_recipe)
    report = {}
    for view, view_scores in scores.items():
        step(f"{view}: bootstrap intervals ({N_RESAMPLES} resamples of {len(set(view_scores.groups))} studies)")
        report[view] = view_report(view_scores.labels, view_scores.scores, label_names, view_scores.groups, seed)
        if view in records:
            report[view]["subgroups"] = subgroup_report(records[view], view_scores, label_names, seed)
    return report, scores


def difference_report(encoder_scores, baseline_scores, label_names, seed):
    """Paired difference (encoder - baseline) of the macro AUROC on the same resampled test studies, with its
    95 % interval and two-sided bootstrap p-value, and per label (``kmedssl.eval.paired_difference``)."""
    if not np.array_equal(encoder_scores.groups, baseline_scores.groups):
        raise ValueError("Expected the encoder and the baseline to be scored on the same test rows. Received: "
                         "different studies")
    return paired_difference(encoder_scores.labels, encoder_scores.scores, baseline_scores.scores,
                             encoder_scores.groups, label_names, seed=seed).to_dict()


def match_labels(train_names, test_names):
    """The label names both sources are scored on: all of them when equal, the smaller list when one is a
    subset of the other (mapped by name, in the training source's order); a ValueError otherwise."""
    train_names, test_names = tuple(train_names), tuple(test_names)
    if train_names == test_names:
        return train_names
    if set(test_names) <= set(train_names) or set(train_names) <= set(test_names):
        return tuple(n for n in train_names if n in test_names)
    raise ValueError(f"Expected the test data's label names to match the training data's (or one list to be a "
                     f"subset of the other). Received: training labels {list(train_names)}, test labels "
                     f"{list(test_names)}")


def select_labels(records, names, chosen):
    """``records`` with their labels restricted to (and ordered as) ``chosen`` of ``names``."""
    if tuple(names) == tuple(chosen):
        return list(records)
    columns = [list(names).index(n) for n in chosen]
    return [dataclasses.replace(r, labels=tuple(r.labels[c] for c in columns)) for r in records]


def open_test_source(test_data, test_format):
    """The cross-source test data and its records: the official test split, or every record without one."""
    source = open_source(test_data, kind="chest", format=test_format)
    if not source.label_names:
        raise ValueError(f"Expected labelled test data. Received: {test_data!r} has no labels")
    return source, split_records(source)["test"] if source.splits is not None else list(source.records)


def parse_cv(folds, repeats, compare, labels, test_data):
    """Validated ``(folds, repeats)``: None when no cross-validation was asked for; ``repeats`` defaults to 10."""
    if folds is None:
        if repeats is not None or compare is not None:
            raise ValueError(f"Expected folds with repeats or compare. Received: folds=None, repeats={repeats!r}, "
                             f"compare={compare!r}")
        return None
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"Expected folds to be an integer >= 2. Received: folds={folds!r}")
    repeats = 10 if repeats is None else repeats
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"Expected repeats to be an integer >= 1. Received: repeats={repeats!r}")
    if isinstance(labels, (list, tuple)) or test_data is not None:
        raise ValueError(f"Expected one label budget and no test_data with folds (cross-validation runs on the "
                         f"training split). Received: labels={labels!r}, test_data={test_data!r}")
    return int(folds), int(repeats)


def cv_view(views):
    """The view scored in cross-validation: frontal, or the first requested per-image view."""
    image_views = [v for v in views if v != "ensemble"]
    return "frontal" if "frontal" in views or not image_views else image_views[0]


def cv_scores(encoder, source, records, folds, seeds, image_size, protocol, label_names, step=None, name="encoder",
              finetune_recipe=None):
    """Macro AUROC of every (repeat, fold): the probe is fitted on k-1 folds with the repeat's seed and scored
    on the held-out fold. Also the per-label AUROC averaged over every fold and repeat (None where undefined).

    Returns:
        ``(scores (n_repeats, n_splits), per_label {name: float | None})``.
    """
    step = step or (lambda what: None)
    images, labels = load_images(source, records, image_size), label_matrix(records)  # (N, S, S, 1), (N, K)
    if protocol == "linear":
        step(f"{name}: features of {len(images)} images")
    features = extract_features(encoder, images) if protocol == "linear" else None
    scores, per_label = np.empty((len(seeds), len(folds))), collections.defaultdict(list)
    for r, seed in enumerate(seeds):
        for k, (train_idx, test_idx) in enumerate(folds):
            step(f"{name}: repeat {r + 1}/{len(seeds)}, fold {k + 1}/{len(folds)}"
                 + (" (fine-tuning)" if protocol != "linear" else ""))
            if protocol == "linear":
                predicted = fit_linear_probe(features[train_idx], labels[train_idx], seed=seed)(features[test_idx])
            else:
                predicted = fit_finetune(encoder, images[train_idx], labels[train_idx], recipe=finetune_recipe,
                                         seed=seed)(images[test_idx])
            fold_auroc = per_label_auroc(labels[test_idx], predicted, label_names)
            scores[r, k] = macro_auroc(fold_auroc)
            for name, value in fold_auroc.items():
                per_label[name] += [] if value is None else [value]
    return scores, {n: float(np.mean(per_label[n])) if per_label[n] else None for n in label_names}


def cv_entry(scores, per_label, name):
    means = summarize_repeats(scores)  # (n_repeats,)
    return {"name": name, "fold_auroc": scores.tolist(), "repeat_means": means.tolist(),
            "mean": float(means.mean()), "std": float(means.std(ddof=1)) if len(means) > 1 else 0.0,
            "per_label_auroc": per_label}


def cross_validate(candidates, source, train, views, protocol, cv, seed, label_names, step=None, finetune_recipe=None):
    """Repeated k-fold on the training split (paper 001 §4.2): fixed folds by subject, one probe seed per
    repeat; with two candidates, both use the same folds and seeds and are compared by a paired two-sided
    Wilcoxon signed-rank test on their per-repeat means.

    Args:
        candidates: ``[(name, encoder, image_size)]``, the evaluated encoder first.
        cv: ``(n_splits, n_repeats)``.
        step: called with a description as each fold's fit (and each candidate's feature extraction) starts.
    """
    view = cv_view(views)
    records = view_records(train, view)
    if not records:
        raise ValueError(f"Expected {view} images in the training split for cross-validation. Received: none")
    folds, seeds = repeated_kfold_indices([r.subject_id for r in records], n_splits=cv[0], n_repeats=cv[1], seed=seed)
    entries = [cv_entry(*cv_scores(model, source, records, folds, seeds, size, protocol, label_names, step, name,
                                   finetune_recipe), name) for name, model, size in candidates]
    result = {"folds": cv[0], "repeats": cv[1], "view": view, "n_images": len(records), "seeds": seeds,
              "methods": entries}
    if len(entries) == 2:
        result["wilcoxon"] = compare_methods(entries[0]["repeat_means"], entries[1]["repeat_means"])
    return result


Baseline = collections.namedtuple("Baseline", "kind name weights normalization")


def parse_baseline(baseline):
    """The ``Baseline(kind, display name, weights file or None, source normalisation)`` of a ``baseline``
    argument (None for None; see ``BASELINES``); a missing weights file fails here, before any work."""
    if baseline is None:
        return None
    if baseline in ("random", "scratch"):
        return Baseline(baseline, BASELINE_NAMES[baseline], None, None)
    kind, _, path = str(baseline).partition(":")
    if kind in ("imagenet", "init") and path:
        weights, normalization = parse_init(baseline if kind == "imagenet" else path)
        return Baseline(kind, BASELINE_NAMES.get(kind, f"init from {weights.name}"), weights, normalization)
    raise ValueError(f"Expected baseline None or one of {BASELINES}. Received: baseline={baseline!r}")


def baseline_encoder(baseline, model, seed):
    """The encoder of a ``Baseline``: a random-init copy of ``model`` (seeded), loaded from its weights file
    when it has one (``kmedssl.interop.load_into``)."""
    copy = random_init_copy(model, seed)
    if baseline.weights is not None:
        load_into(copy, baseline.weights, source_normalization=baseline.normalization)
    return copy


def load_compare(compare, model, seed, image_size):
    """``(name, encoder, image_size)`` of the compared method: ``"random"`` (a randomly initialised copy of
    the evaluated encoder), or another encoder, ``.keras`` file or run directory."""
    if isinstance(compare, str) and compare == "random":
        return "random-init", random_init_copy(model, seed), image_size
    other, other_dir, recipe = load_encoder(compare)
    name = other_dir.name if other_dir else (pathlib.Path(compare).stem if isinstance(compare, (str, pathlib.Path))
                                             else other.name)
    return name, other, recipe.get("image_size", getattr(other, "image_size", image_size))


def budget_axis(budgets, train):
    """Numeric x positions of the budgets: fractions when every budget is one (None = 1.0), else counts of
    training studies (None = all of them)."""
    total = len({(r.subject_id, r.study_id) for r in train})
    if all(b is None or (isinstance(b, float) and b <= 1) for b in budgets):
        return [1.0 if b is None else float(b) for b in budgets]
    return [float(len({(r.subject_id, r.study_id) for r in label_budget(train, b)})) if b is not None else float(total)
            for b in budgets]


def budget_summary(budget, x, result):
    """One label budget's line of the budget curve: headline and per-view macro AUROC with their intervals (and
    the baseline's, with the paired differences)."""
    summary = {"labels": budget, "x": x, "macro_auroc": result["macro_auroc"],
               "macro_auroc_ci": result["macro_auroc_ci"],
               "views": {view: report["macro_auroc"] for view, report in result["views"].items()},
               "views_ci": {view: report["macro_auroc_ci"] for view, report in result["views"].items()}}
    if "baseline" in result:
        baseline = result["baseline"]
        summary.update(
            baseline_macro_auroc=baseline["macro_auroc"], baseline_macro_auroc_ci=baseline["macro_auroc_ci"],
            baseline_views={view: report["macro_auroc"] for view, report in baseline["views"].items()},
            baseline_views_ci={view: report["macro_auroc_ci"] for view, report in baseline["views"].items()},
            baseline_difference=macro_only(baseline["difference"]),
            baseline_differences={view: macro_only(report["difference"]) for view, report in baseline["views"].items()},
        )
    return summary


def macro_only(interval):
    """An interval's dict without its ``per_label`` entries."""
    return {key: value for key, value in interval.items() if key != "per_label"}


def check_test_size(test_size):
    if isinstance(test_size, bool) or not isinstance(test_size, (int, np.integer)) or test_size < 1:
        raise ValueError(f"Expected test_size to be a positive integer (test studies). Received: "
                         f"test_size={test_size!r}")
    return int(test_size)


def count_steps(views, budgets, roles, render, property_probes, write, embedding):
    """The number of ``Progress`` steps ``evaluate`` announces (see ``evaluate``'s ``progress``)."""
    fitted = sum(v in views or "ensemble" in views for v in ("frontal", "lateral"))
    per_budget = len(roles) * (fitted + len(views)) + (len(views) if len(roles) > 1 else 0)
    return (render + len(budgets) * per_budget + (len(roles) if property_probes else 0) + write + embedding)


def evaluate(encoder, data="phantom", protocol="linear", labels=None, views=VIEWS, seed=0, baseline=None,
             output_dir=None, format=None, test_data=None, test_format=None, folds=None, repeats=None, compare=None,
             property_probes=False, test_size=TEST_COHORT_STUDIES, progress=None, finetune_recipe=None,
             fit_seed=None):
    """Linear-probe or fine-tune ``encoder`` on chest pathology labels, per view and ensembled (SPEC §5).

    Every AUROC comes with its 95 % interval (a cluster bootstrap over the test studies, 1,000 resamples,
    seeded by ``seed``), and with a baseline every view gets the paired difference encoder - baseline on the
    same resampled studies, with its 95 % interval and p-value (``kmedssl.eval.intervals``).

    Args:
        encoder: a Keras encoder, an ``ENCODER.keras`` file, or a run directory.
        data: ``"phantom"`` or a chest radiograph data path (``format`` inferred when None). On the phantom,
            when ``encoder`` is a chest run, its cohort and subject split are reused for the probe's training
            studies (test subjects never seen in pretraining), and the test set is the phantom's own test
            cohort (``kmedssl.data.test_cohort``: ``test_size`` studies of subjects that no training cohort
            has, rendered once and cached on disk). On a path, the official split is used when the data has
            one.
        protocol: ``"linear"`` (frozen features, one logistic regression per label) or ``"finetune"``
            (a copy of the encoder and a linear head trained end to end: ``kmedssl.eval.fit_finetune``).
        labels: label budget: None (all training studies), a count of studies, or a fraction; a list or
            tuple of budgets evaluates once per budget and draws macro AUROC against the budget.
        views: any of ``("frontal", "lateral", "ensemble")``.
        seed: seed of the label budget, the probes (unless ``fit_seed``), the baseline's weights and the bootstrap
            (and of the folds with ``folds``).
        baseline: ``"random"``: a frozen randomly initialised copy of the encoder, linear-probed whatever the
            protocol; ``"scratch"``: the random-init copy trained with the same protocol (with ``"finetune"``
            the papers' training from scratch; with ``"linear"`` the same as ``"random"``); ``"imagenet:PATH"``:
            the copy initialised from ImageNet weights on disk (timm/torchvision/transformers files; ImageNet's
            input normalisation folded into the first layer; paper 001's ImageNet row) and ``"init:PATH"``: from
            any weights file as it is (``kmedssl.interop.load_into``), each trained with the same protocol.
            Evaluated side by side on the same test rows; every view reports the paired difference.
        output_dir: where to write ``reports/`` (default: the run directory, if any).
        format: format of a ``data`` path.
        test_data: cross-source evaluation (paper 002 §6): the probe is fitted on the training split of
            ``data`` and scored on the test split of ``test_data`` ("phantom" or a path; every record when
            it has no official split). Label names must be equal, or one list a subset of the other (then
            the shared labels are scored, matched by name).
        test_format: format of a ``test_data`` path (inferred when None).
        folds: repeated k-fold instead of the test split (paper 001 §4.2): the training split's ``views``
            images (frontal, or the first requested per-image view) are split into ``folds`` fixed folds by
            subject; the probe is fitted on k-1 folds and scored on the held-out one.
        repeats: repeats of the k-fold procedure (default 10), each with its own probe seed.
        compare: with ``folds``, another encoder, ``.keras`` file or run directory (or ``"random"``) evaluated
            on the same folds and seeds; a paired two-sided Wilcoxon signed-rank test on the per-repeat
            means gives the p-value (paper 001 Tables 4-5).
        property_probes: also run ACE's property probes (paper 004 §5.1: compositionality, decompositionality,
            patch-to-image retrieval) on the frontal test images, for the encoder and any baseline; written to
            ``property_probes.{json,md}`` and ``compositionality.png``.
        test_size: studies of the phantom test cohort (default 2,000); used when ``data="phantom"`` without
            ``test_data`` or ``folds``.
        finetune_recipe: how ``protocol="finetune"`` trains (``kmedssl.eval.fit_finetune``'s ``recipe``): a
            ``FineTuneRecipe``, ``"phantom"`` or ``"paper"`` (the encoder family's recipe at that scale; default
            ``"phantom"`` on the phantom, ``"paper"`` on a data path).
        fit_seed: seed of the probes and fine-tuning runs alone (head initialisation, batch order, drop path),
            for the encoder and the baseline alike; None = ``seed``. With the same ``seed``, another ``fit_seed``
            repeats the evaluation with the same labelled studies, baseline weights and bootstrap, so the spread
            over fit seeds is what one fine-tuning run's interval leaves out (docs/evaluation.md, "The eighth
            round"). Not with ``folds`` (each repeat has its own seed).
        progress: None (silent) or ``progress(done, total, what)``, called as each long step starts (the test
            cohort's rendering, each view's feature extraction + probe or fine-tuning run per encoder and
            budget, each view's bootstrap, each fold, the property probes, the figures) with the number of
            steps done, their total and a description of the step, and once at the end with
            ``(total, total, "done")``. Steps differ in length; ``total`` is fixed before the first call.

    Returns:
        dict with ``macro_auroc``, ``macro_auroc_ci`` (its interval: ``estimate``, ``low``, ``high``,
        ``confidence``, ``n_resamples``, ``n_groups``, ``n_incomplete``), ``per_label_auroc`` and
        ``per_label_auroc_ci`` (of the ensemble when evaluated, else of the first view), ``views`` (every
        view's report: the same keys, ``n_test`` rows and ``n_test_studies``, and per image view the
        ``subgroups``), and with a baseline, ``baseline`` (the same for it, plus ``name``, ``kind``,
        ``protocol``, ``difference`` of the headline view and per view ``views[view]["difference"]``: the
        paired difference encoder - baseline with ``p_value`` and ``per_label``). On the phantom test cohort,
        ``test_cohort`` (``seed``, ``n_studies``, ``n_subjects``, ``n_images``, ``image_size``, ``cache``).
        With a list of budgets, ``budgets`` (one entry per budget, with intervals and differences) and the
        headline of the last budget. With ``folds``, ``cv`` (fold AUROCs, per-repeat means, mean, std per
        method and ``wilcoxon``) and the headline ``macro_auroc`` / ``per_label_auroc`` are the
        cross-validated means (no bootstrap interval). With ``property_probes``, ``property_probes`` (per
        encoder role: the three probes' summary numbers).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Expected protocol in {PROTOCOLS}. Received: protocol={protocol!r}")
    views = tuple(views)
    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise ValueError(f"Expected views from {VIEWS}. Received: {views}")
    baseline = parse_baseline(baseline)
    test_size = check_test_size(test_size)
    budgets = list(labels) if isinstance(labels, (list, tuple)) else None
    if budgets is not None and not budgets:
        raise ValueError(f"Expected at least one label budget in the list. Received: labels={labels!r}")
    cv = parse_cv(folds, repeats, compare, labels, test_data)
    if fit_seed is not None and cv is not None:
        raise ValueError(f"Expected fit_seed=None with folds (each repeat seeds its own probes). Received: "
                         f"fit_seed={fit_seed}")
    if cv is not None and property_probes:
        raise ValueError("Expected property_probes=False with folds: the probes use the test split, which "
                         "cross-validation does not touch. Run them in a separate evaluate call.")
    model, run_dir, recipe = load_encoder(encoder)
    finetune_recipe = finetune_recipe or ("phantom" if data == "phantom" else "paper")
    same_data = recipe.get("data_kind", "chest") == "chest" and data == "phantom"  # reuse its cohort and split
    source = open_source(
        data, kind="chest", size=recipe.get("data_size", 500) if same_data else 500,
        seed=recipe.get("data_seed", 0) if same_data else 0, format=format,
    )
    splits = split_records(source, seed=recipe.get("split_seed", 0) if same_data else 0)
    if not source.label_names:
        raise ValueError(f"Expected labelled data for a linear probe. Received: {data!r} has no labels")
    image_size = recipe.get("image_size", getattr(model, "image_size", 64))
    out = pathlib.Path(output_dir) if output_dir else (run_dir / runs.REPORTS_DIR if run_dir else None)

    if cv is not None:
        candidates = [("encoder", model, image_size)] + ([load_compare(compare, model, seed, image_size)]
                                                         if compare is not None else [])
        train = label_budget(splits["train"], labels, seed)
        fits = cv[0] * cv[1] + (protocol == "linear")
        step = Progress(progress, len(candidates) * fits + (out is not None))
        result = {"protocol": protocol, "labels": labels, "image_size": image_size,
                  "cv": cross_validate(candidates, source, train, views, protocol, cv, seed, source.label_names,
                                       step, finetune_recipe)}
        result.update(macro_auroc=result["cv"]["methods"][0]["mean"],
                      per_label_auroc=result["cv"]["methods"][0]["per_label_auroc"])
        if out is not None:
            step("writing the reports")
            write_cv_reports(out, result)
        step.finish()
        return result

    test_source, test = source, splits["test"]
    names = tuple(source.label_names)
    train_all = splits["train"]
    cohort = None
    if test_data is not None:
        test_source, test = open_test_source(test_data, test_format)
        names = match_labels(source.label_names, test_source.label_names)
        train_all = select_labels(train_all, source.label_names, names)
        test = select_labels(test, test_source.label_names, names)
    elif data == "phantom":
        cohort = PhantomTestSource(size=test_size, seed=TEST_COHORT_SEED, workers=1, cache=True)
        test_source, test = cohort, list(cohort.records)
    encoders = {"encoder": (model, protocol)}
    if baseline is not None:
        encoders["baseline"] = (baseline_encoder(baseline, model, seed),
                                "linear" if baseline.kind == "random" else protocol)
    render = cohort is not None and not cohort.cache_path(image_size).exists()
    embedding = out is not None and "frontal" in views
    step = Progress(progress, count_steps(views, budgets or [labels], encoders, render, property_probes,
                                          out is not None, embedding))
    if cohort is not None:
        if render:
            step(f"rendering the phantom test cohort once ({len(test)} images of {test_size} studies at "
                 f"{image_size} px; cached in {cohort.cache_path(image_size)})")
        cohort.images(image_size)
    role_names = {"encoder": "pretrained encoder", "baseline": f"{baseline and baseline.name} copy"}

    def one_budget(budget):
        train = label_budget(train_all, budget, seed)
        result = {"protocol": protocol, "labels": budget, "views": {}, "image_size": image_size, "seed": seed,
                  "fit_seed": seed if fit_seed is None else fit_seed}
        figures = {}
        at = "" if budgets is None else f", labels {'all' if budget is None else format_budget(budget)}"
        for role, (candidate, role_protocol) in encoders.items():
            what = (f"{'linear probe' if role_protocol == 'linear' else 'fine-tuning'} of the {role_names[role]} "
                    f"({len(train)} training images{at})")
            report, scores = probe_report(candidate, (source, test_source), train, test, views, image_size,
                                          role_protocol, seed, names, step=step, what=what,
                                          finetune_recipe=finetune_recipe, fit_seed=fit_seed)
            figures[role] = scores
            headline = report["ensemble"] if "ensemble" in report else report[views[0]]
            entry = {"macro_auroc": headline["macro_auroc"], "macro_auroc_ci": headline["macro_auroc_ci"],
                     "per_label_auroc": headline["per_label_auroc"],
                     "per_label_auroc_ci": headline["per_label_auroc_ci"], "views": report}
            if role == "encoder":
                result.update(entry)
            else:
                result["baseline"] = dict(entry, name=baseline.name, kind=baseline.kind, protocol=role_protocol)
                if baseline.weights is not None:
                    result["baseline"]["weights"] = str(baseline.weights)
        if "baseline" in result:
            for view, report in result["baseline"]["views"].items():
                step(f"{view}: paired difference with the {baseline.name} baseline")
                report["difference"] = difference_report(figures["encoder"][view], figures["baseline"][view], names,
                                                          seed)
            headline = "ensemble" if "ensemble" in result["views"] else views[0]
            result["baseline"]["difference"] = result["baseline"]["views"][headline]["difference"]
        return result, figures

    if budgets is None:
        result, figures = one_budget(labels)
    else:
        entries = [one_budget(b) for b in budgets]
        result, figures = dict(entries[-1][0]), entries[-1][1]
        axis = budget_axis(budgets, train_all)
        result.update(labels=budgets, budgets=[budget_summary(b, x, e) for b, x, (e, _) in zip(budgets, axis, entries)])
    if test_data is not None:
        result["test_data"] = {"data": str(test_data), "label_names": list(names), "n_test_images": len(test)}
    if cohort is not None:
        result["test_cohort"] = {
            "seed": cohort.seed, "n_studies": cohort.n_studies, "n_subjects": len({r.subject_id for r in test}),
            "n_images": len(test), "image_size": image_size,
            "cache": str(cohort.cache_path(image_size)) if cohort.cache else None}
    if property_probes:
        result["property_probes"] = run_property_probes(
            {role: candidate for role, (candidate, _) in encoders.items()}, test_source, test, image_size, seed, out,
            step=step, names={"encoder": "pretrained", "baseline": baseline and baseline.name})
    if out is not None:
        step("writing the reports and figures")
        write_reports(out, result, figures, label_names=names)
        if embedding:
            step("t-SNE of the frontal test features")
            plot_frontal_embedding(out, model, test_source, test, image_size, seed, names)
    step.finish()
    return result


def format_budget(budget):
    return f"{budget:g}" if isinstance(budget, (int, float)) else str(budget)


def run_property_probes(encoders, source, test, image_size, seed, directory=None, step=None, names=None):
    """ACE's property probes (paper 004 §5.1) of every encoder role on the frontal test images.

    Compositionality uses ``image_size // 2``-pixel patches; decompositionality and retrieval use batches of
    32 images as the paper (fewer when the test split is smaller: chance is then ``1 / batch_size``).
    Writes ``property_probes.{json,md}`` and ``compositionality.png`` into ``directory`` when given.
    ``step(what)`` is called as each role's probes start; ``names`` maps roles to display names.
    """
    images = load_images(source, view_records(test, "frontal"), image_size)
    batch_size = min(32, len(images))
    if batch_size < 2:
        raise ValueError(f"Expected at least 2 frontal test images for the property probes. Received: {len(images)}")
    names = {"encoder": "pretrained", "baseline": "random init", **(names or {})}
    summary, distributions = {}, {}
    for role, candidate in encoders.items():
        if step is not None:
            step(f"ACE property probes of the {names[role]} encoder ({len(images)} frontal test images)")
        composed = compositionality(candidate, images, patch_size_px=2 * (image_size // 4), seed=seed)
        decomposed = decompositionality(candidate, images, batch_size=batch_size, seed=seed)
        retrieved = patch_to_image_retrieval(candidate, images, batch_size=batch_size, seed=seed)
        summary[role] = {"compositionality_mean_cosine": composed["mean"],
                         "decompositionality_accuracy": decomposed["accuracy"],
                         "decompositionality_mean_cosine": decomposed["mean_cosine"],
                         "retrieval_accuracy": retrieved["accuracy"], "chance": 1.0 / batch_size,
                         "n_images": len(images), "batch_size": batch_size}
        distributions[f"{names[role]}, 4 sub-patches"] = composed["similarities"]["4"]
    if directory is not None:
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "property_probes.json").write_text(json.dumps(summary, indent=2) + "\n")
        lines = ["# ACE property probes (paper 004 §5.1), frontal test images", "",
                 "| encoder | compositionality (mean cos, 2 / 4 sub-patches) | decompositionality acc. | "
                 "patch-to-image retrieval acc. | chance |", "|---|---|---|---|---|"]
        for role, entry in summary.items():
            c = entry["compositionality_mean_cosine"]
            lines.append(f"| {names[role]} | {c['2']:.4f} / {c['4']:.4f} | {entry['decompositionality_accuracy']:.4f} | "
                         f"{entry['retrieval_accuracy']:.4f} | {entry['chance']:.4f} |")
        (directory / "property_probes.md").write_text("\n".join(lines) + "\n")
        plot_similarity_distribution(distributions, directory / "compositionality.png")
    return summary


def report_stem(protocol):
    return "linear_probe" if protocol == "linear" else "finetune"


def test_set_line(result):
    """One Markdown line naming the test set and how the intervals were computed."""
    views = result["views"]
    studies = ", ".join(f"{view} {report.get('n_test_studies', report['n_test'])}" for view, report in views.items())
    if "test_cohort" in result:
        cohort = result["test_cohort"]
        test_set = (f"the phantom test cohort (seed {cohort['seed']}: {cohort['n_studies']} studies of "
                    f"{cohort['n_subjects']} subjects, {cohort['n_images']} images; never seen in pretraining or "
                    f"probe training)")
    elif "test_data" in result:
        test_set = f"{result['test_data']['data']} ({result['test_data']['n_test_images']} images)"
    else:
        test_set = "the data's test split"
    ci = next(iter(views.values()))["macro_auroc_ci"]
    line = (f"Test set: {test_set}; test studies per view: {studies}. Brackets: {100 * ci['confidence']:g} % "
            f"interval, bootstrap over test studies ({ci['n_resamples']} resamples, seed {result.get('seed', 0)})")
    if "baseline" in result:
        line += "; differences are paired (the same resampled studies) with a two-sided bootstrap p-value"
    return line + "."


def write_reports(directory, result, figures, label_names):
    """``<protocol>.json`` (every number), ``<protocol>.md`` (summary tables, every AUROC with its interval),
    ``<protocol>_scores.npz`` (the test rows' scores, ``read_scores``) and ``roc_<protocol>_<view>.png``;
    with a list of budgets also ``auroc_vs_budget.png`` (with the intervals) and a budget table."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = report_stem(result["protocol"])
    (directory / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    views = list(result["views"])
    shift = f" on {result['test_data']['data']}" if "test_data" in result else ""
    baseline = result.get("baseline")
    lines = [f"# {stem.replace('_', ' ').capitalize()} (macro AUROC{shift}, 95 % CI)", "", test_set_line(result), "",
             "| encoder | " + " | ".join(views) + " |", "|---|" + "---|" * len(views)]
    rows = [("pretrained", result)] + ([(baseline["name"], baseline)] if baseline else [])
    for name, entry in rows:
        lines.append(f"| {name} | " + " | ".join(format_interval(entry["views"][v]["macro_auroc_ci"]) for v in views)
                     + " |")
    if baseline:
        lines.append(f"| difference (pretrained - {baseline['name']}) | "
                     + " | ".join(format_interval(macro_only(baseline["views"][v]["difference"])) for v in views)
                     + " |")
    headline = "ensemble" if "ensemble" in views else views[0]
    lines += ["", f"## Per label ({headline})", "",
              "| label | pretrained |" + (f" {baseline['name']} | difference |" if baseline else ""),
              "|---|---|" + ("---|---|" if baseline else "")]
    for name in label_names:
        cells = [result["views"][headline]["per_label_auroc_ci"].get(name)]
        if baseline:
            cells += [baseline["views"][headline]["per_label_auroc_ci"].get(name),
                      baseline["views"][headline]["difference"].get("per_label", {}).get(name)]
        lines.append(f"| {name} | " + " | ".join("n/a (one class)" if c is None else format_interval(c)
                                                 for c in cells) + " |")
    if "budgets" in result:
        lines += budget_table(result["budgets"], views, baseline["name"] if baseline else "baseline")
        write_budget_figure(directory / "auroc_vs_budget.png", result["budgets"], stem,
                            baseline_name=baseline["name"] if baseline else "baseline")
    (directory / f"{stem}.md").write_text("\n".join(lines) + "\n")
    write_scores(directory / f"{stem}_scores.npz", figures, label_names)
    for view, view_scores in figures["encoder"].items():
        ci = result["views"][view]["per_label_auroc_ci"]
        plot_roc_curves(view_scores.labels, view_scores.scores, label_names, directory / f"roc_{stem}_{view}.png",
                        title=f"{stem.replace('_', ' ')}, {view}: ROC per label",
                        intervals={n: (c["low"], c["high"]) for n, c in ci.items() if c is not None})


def write_scores(path, figures, label_names):
    """The test rows of every view and role: ``<view>.labels``, ``<view>.groups`` (study of every row) and
    ``<view>.<role>`` scores (role ``encoder``, ``baseline``), plus ``label_names``; no pickle."""
    arrays = {"label_names": np.asarray(list(label_names))}
    for role, per_view in figures.items():
        for view, view_scores in per_view.items():
            arrays[f"{view}.labels"] = np.asarray(view_scores.labels, "float32")
            arrays[f"{view}.groups"] = np.asarray(view_scores.groups).astype(str)
            arrays[f"{view}.{role}"] = np.asarray(view_scores.scores, "float64")
    np.savez_compressed(path, **arrays)
    return path


def read_scores(path):
    """``(label_names, {view: {role: ViewScores}})`` from a ``<protocol>_scores.npz`` written by ``evaluate``.

    Two evaluations on the same test set (e.g. two encoders of the same image size on the phantom test
    cohort) can be compared paired: ``kmedssl.eval.paired_difference(a.labels, a.scores, b.scores, a.groups)``.
    """
    with np.load(path, allow_pickle=False) as data:
        names = data["label_names"].tolist()
        out = collections.defaultdict(dict)
        for key in data.files:
            view, _, role = key.partition(".")
            if role and role not in ("labels", "groups"):
                out[view][role] = ViewScores(data[f"{view}.labels"], data[key], data[f"{view}.groups"])
    return names, dict(out)


def budget_table(budgets, views, baseline_name="baseline"):
    """Markdown lines: macro AUROC per view with its interval (and the baseline's headline AUROC and paired
    difference) for every label budget."""
    baseline = "baseline_macro_auroc" in budgets[0]
    lines = ["", "## Macro AUROC by label budget", "",
             "| label budget | " + " | ".join(views) + (f" | {baseline_name} | difference |" if baseline else " |"),
             "|---|" + "---|" * (len(views) + 2 * baseline)]
    for entry in budgets:
        cells = [format_interval(entry["views_ci"][v]) for v in views]
        if baseline:
            cells += [format_interval(entry["baseline_macro_auroc_ci"]), format_interval(entry["baseline_difference"])]
        budget = "all" if entry["labels"] is None else f"{entry['labels']:g}"
        lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    return lines


def write_budget_figure(path, budgets, stem, baseline_name="baseline"):
    """Headline macro AUROC against the label budget with 95 % intervals, pretrained (and the baseline)
    (paper 000 Fig. 3)."""
    curves = {"pretrained": {b["x"]: b["macro_auroc"] for b in budgets}}
    intervals = {"pretrained": {b["x"]: (b["macro_auroc_ci"]["low"], b["macro_auroc_ci"]["high"]) for b in budgets}}
    if "baseline_macro_auroc" in budgets[0]:
        curves[baseline_name] = {b["x"]: b["baseline_macro_auroc"] for b in budgets}
        intervals[baseline_name] = {b["x"]: (b["baseline_macro_auroc_ci"]["low"], b["baseline_macro_auroc_ci"]["high"])
                                    for b in budgets}
    plot_auroc_vs_budget(curves, path, title=f"{stem.replace('_', ' ').capitalize()}: macro AUROC vs label budget",
                         intervals=intervals)


def write_cv_reports(directory, result):
    """``cv_<protocol>.json`` (every fold's AUROC) and ``cv_<protocol>.md``: mean ± std of the per-repeat
    means per method and the Wilcoxon p-value (paper 001 Tables 4-5)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = "cv_" + report_stem(result["protocol"])
    (directory / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    cv = result["cv"]
    wilcoxon = cv.get("wilcoxon")
    lines = [f"# {cv['repeats']} x {cv['folds']}-fold cross-validation, {cv['view']} images (macro AUROC)", "",
             "| method | mean AUROC | std | p-value (Wilcoxon vs encoder) |", "|---|---|---|---|"]
    for i, entry in enumerate(cv["methods"]):
        p_value = "" if i == 0 or wilcoxon is None else f"{wilcoxon['p_value']:.4g}"
        lines.append(f"| {entry['name']} | {entry['mean']:.4f} | {entry['std']:.4f} | {p_value} |")
    (directory / f"{stem}.md").write_text("\n".join(lines) + "\n")


def plot_frontal_embedding(directory, encoder, source, test, image_size, seed, label_names):
    """t-SNE of the frozen features of the frontal test images, coloured by their finding (at most
    ``EMBEDDING_POINTS`` images, a seeded subset of a larger test set: t-SNE's time grows with the points)."""
    records = view_records(test, "frontal")
    if len(records) > EMBEDDING_POINTS:
        chosen = np.sort(np.random.default_rng(seed).choice(len(records), EMBEDDING_POINTS, replace=False))
        subset, records = f" ({EMBEDDING_POINTS} of {len(records)})", [records[i] for i in chosen]
    else:
        subset = ""
    images = load_images(source, records, image_size)
    colours = [" + ".join(n for n, v in zip(label_names, r.labels) if v) or "no finding" for r in records]
    colours = [c if c.count("+") == 0 else "several findings" for c in colours]
    plot_embedding(extract_features(encoder, images), colours, pathlib.Path(directory) / "embedding_frontal.png",
                   title=f"Frontal test images{subset}: t-SNE of encoder features", seed=seed)
