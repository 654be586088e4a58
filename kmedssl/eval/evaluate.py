"""``evaluate``: linear-probe a pretrained encoder on the phantom pathology labels (SPEC §5, §9), across
sources (paper 002 §6), with repeated k-fold and Wilcoxon tests (paper 001 §4.2) and label-budget curves."""

import collections
import dataclasses
import json
import pathlib

import keras
import numpy as np

from kmedssl.data.sources import open_source, split_records
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
from kmedssl.training import runs
from kmedssl.training.checkpoints import load_model_file

VIEWS = ("frontal", "lateral", "ensemble")
PROTOCOLS = ("linear", "finetune")


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


def fit_predict(protocol, encoder, train_images, train_labels, test_images, seed):
    """Test-set probabilities of a linear probe on frozen features, or of a fine-tuned copy of the encoder."""
    if protocol == "linear":
        predict = fit_linear_probe(extract_features(encoder, train_images), train_labels, seed=seed)
        return predict(extract_features(encoder, test_images))
    return fit_finetune(encoder, train_images, train_labels, seed=seed)(test_images)


def load_images(source, records, image_size):
    """(N, S, S, 1) float32 images of ``records``."""
    return np.stack([source.load_image(r, image_size)[..., None] for r in records])


def label_matrix(records):
    return np.asarray([r.labels for r in records], dtype="float32")  # (N, K)


def probe_view(encoder, sources, train, test, view, image_size, protocol, seed):
    """Fit on the ``view`` images of ``train``; the ``view`` test records and their probabilities.

    ``sources`` is ``(train_source, test_source)``: the images of ``train`` and ``test`` come from each.
    """
    train_records, test_records = view_records(train, view), view_records(test, view)
    if not train_records or not test_records:
        raise ValueError(f"Expected {view} images in the training and test splits. Received: "
                         f"{len(train_records)} and {len(test_records)}; choose other --views")
    train_images = load_images(sources[0], train_records, image_size)
    test_images = load_images(sources[1], test_records, image_size)
    return test_records, fit_predict(protocol, encoder, train_images, label_matrix(train_records), test_images, seed)


def study_scores(records, scores):
    """Mean score per study: {(subject, study): (K,)}."""
    grouped = collections.defaultdict(list)
    for record, score in zip(records, scores):
        grouped[(record.subject_id, record.study_id)].append(score)
    return {key: np.mean(values, axis=0) for key, values in grouped.items()}


def view_report(labels, scores, label_names):
    per_label = per_label_auroc(labels, scores, label_names)
    return {"macro_auroc": macro_auroc(per_label), "per_label_auroc": per_label, "n_test": int(len(labels))}


def probe_report(encoder, sources, train, test, views, image_size, protocol, seed, label_names):
    """Per-view AUROC reports (+ sex/age subgroups per image view); ``ensemble`` fuses the frontal and
    lateral study probabilities (mean). Also returns ``{view: (labels, scores)}`` for the ROC figures."""
    study_labels = {(r.subject_id, r.study_id): np.asarray(r.labels, "float32") for r in test}
    per_view_scores, report, curves = {}, {}, {}
    for view in ("frontal", "lateral"):
        if view in views or "ensemble" in views:
            records, scores = probe_view(encoder, sources, train, test, view, image_size, protocol, seed)
            per_view_scores[view] = study_scores(records, scores)
            if view in views:
                labels = label_matrix(records)
                report[view] = dict(view_report(labels, scores, label_names),
                                    subgroups=subgroup_auroc(records, scores, label_names))
                curves[view] = (labels, scores)
    if "ensemble" in views:
        both = sorted(set(per_view_scores["frontal"]) & set(per_view_scores["lateral"]))
        fused = np.stack([(per_view_scores["frontal"][k] + per_view_scores["lateral"][k]) / 2 for k in both])
        labels = np.stack([study_labels[k] for k in both])
        report["ensemble"] = view_report(labels, fused, label_names)
        curves["ensemble"] = (labels, fused)
    return report, curves


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


def cv_scores(encoder, source, records, folds, seeds, image_size, protocol, label_names):
    """Macro AUROC of every (repeat, fold): the probe is fitted on k-1 folds with the repeat's seed and scored
    on the held-out fold. Also the per-label AUROC averaged over every fold and repeat (None where undefined).

    Returns:
        ``(scores (n_repeats, n_splits), per_label {name: float | None})``.
    """
    images, labels = load_images(source, records, image_size), label_matrix(records)  # (N, S, S, 1), (N, K)
    features = extract_features(encoder, images) if protocol == "linear" else None
    scores, per_label = np.empty((len(seeds), len(folds))), collections.defaultdict(list)
    for r, seed in enumerate(seeds):
        for k, (train_idx, test_idx) in enumerate(folds):
            if protocol == "linear":
                predicted = fit_linear_probe(features[train_idx], labels[train_idx], seed=seed)(features[test_idx])
            else:
                predicted = fit_finetune(encoder, images[train_idx], labels[train_idx], seed=seed)(images[test_idx])
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


def cross_validate(candidates, source, train, views, protocol, cv, seed, label_names):
    """Repeated k-fold on the training split (paper 001 §4.2): fixed folds by subject, one probe seed per
    repeat; with two candidates, both use the same folds and seeds and are compared by a paired two-sided
    Wilcoxon signed-rank test on their per-repeat means.

    Args:
        candidates: ``[(name, encoder, image_size)]``, the evaluated encoder first.
        cv: ``(n_splits, n_repeats)``.
    """
    view = cv_view(views)
    records = view_records(train, view)
    if not records:
        raise ValueError(f"Expected {view} images in the training split for cross-validation. Received: none")
    folds, seeds = repeated_kfold_indices([r.subject_id for r in records], n_splits=cv[0], n_repeats=cv[1], seed=seed)
    entries = [cv_entry(*cv_scores(model, source, records, folds, seeds, size, protocol, label_names), name)
               for name, model, size in candidates]
    result = {"folds": cv[0], "repeats": cv[1], "view": view, "n_images": len(records), "seeds": seeds,
              "methods": entries}
    if len(entries) == 2:
        result["wilcoxon"] = compare_methods(entries[0]["repeat_means"], entries[1]["repeat_means"])
    return result


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
    """One label budget's line of the budget curve: headline and per-view macro AUROC (and the baseline's)."""
    summary = {"labels": budget, "x": x, "macro_auroc": result["macro_auroc"],
               "views": {view: report["macro_auroc"] for view, report in result["views"].items()}}
    if "baseline" in result:
        summary["baseline_macro_auroc"] = result["baseline"]["macro_auroc"]
    return summary


def evaluate(encoder, data="phantom", protocol="linear", labels=None, views=VIEWS, seed=0, baseline=None,
             output_dir=None, format=None, test_data=None, test_format=None, folds=None, repeats=None, compare=None,
             property_probes=False):
    """Linear-probe or fine-tune ``encoder`` on chest pathology labels, per view and ensembled (SPEC §5).

    Args:
        encoder: a Keras encoder, an ``ENCODER.keras`` file, or a run directory.
        data: ``"phantom"`` or a chest radiograph data path (``format`` inferred when None). On the phantom,
            when ``encoder`` is a chest run, its cohort and subject split are reused so that test subjects
            were never seen in pretraining; on a path, the official split is used when the data has one.
        protocol: ``"linear"`` (frozen features, one logistic regression per label) or ``"finetune"``
            (a copy of the encoder and a linear head trained end to end: paper 001 Table 3, 10 epochs,
            batch 32, Adam 1e-4, StepLR(5, 0.1)).
        labels: label budget: None (all training studies), a count of studies, or a fraction; a list or
            tuple of budgets evaluates once per budget and draws macro AUROC against the budget.
        views: any of ``("frontal", "lateral", "ensemble")``.
        seed: seed of the label budget and the probes (and of the folds with ``folds``).
        baseline: ``"random"`` also probes a randomly initialised copy of the encoder.
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

    Returns:
        dict with ``macro_auroc`` and ``per_label_auroc`` (of the ensemble when evaluated, else of the first
        view), ``views`` (every view's report) and, with a baseline, ``baseline`` (the same for it). With a
        list of budgets, ``budgets`` (one entry per budget) and the headline of the last budget. With
        ``folds``, ``cv`` (fold AUROCs, per-repeat means, mean, std per method and ``wilcoxon``) and the
        headline ``macro_auroc`` / ``per_label_auroc`` are the cross-validated means. With ``property_probes``,
        ``property_probes`` (per encoder role: the three probes' summary numbers).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Expected protocol in {PROTOCOLS}. Received: protocol={protocol!r}")
    views = tuple(views)
    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise ValueError(f"Expected views from {VIEWS}. Received: {views}")
    if baseline not in (None, "random"):
        raise ValueError(f"Expected baseline None or 'random'. Received: baseline={baseline!r}")
    budgets = list(labels) if isinstance(labels, (list, tuple)) else None
    if budgets is not None and not budgets:
        raise ValueError(f"Expected at least one label budget in the list. Received: labels={labels!r}")
    cv = parse_cv(folds, repeats, compare, labels, test_data)
    if cv is not None and property_probes:
        raise ValueError("Expected property_probes=False with folds: the probes use the test split, which "
                         "cross-validation does not touch. Run them in a separate evaluate call.")
    model, run_dir, recipe = load_encoder(encoder)
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
        result = {"protocol": protocol, "labels": labels, "image_size": image_size,
                  "cv": cross_validate(candidates, source, train, views, protocol, cv, seed, source.label_names)}
        result.update(macro_auroc=result["cv"]["methods"][0]["mean"],
                      per_label_auroc=result["cv"]["methods"][0]["per_label_auroc"])
        if out is not None:
            write_cv_reports(out, result)
        return result

    test_source, test = source, splits["test"]
    names = tuple(source.label_names)
    train_all = splits["train"]
    if test_data is not None:
        test_source, test = open_test_source(test_data, test_format)
        names = match_labels(source.label_names, test_source.label_names)
        train_all = select_labels(train_all, source.label_names, names)
        test = select_labels(test, test_source.label_names, names)
    encoders = {"encoder": model}
    if baseline == "random":
        encoders["baseline"] = random_init_copy(model, seed)

    def one_budget(budget):
        train = label_budget(train_all, budget, seed)
        result = {"protocol": protocol, "labels": budget, "views": {}, "image_size": image_size}
        figures = {}
        for role, candidate in encoders.items():
            report, curves = probe_report(candidate, (source, test_source), train, test, views, image_size, protocol,
                                          seed, names)
            figures[role] = curves
            headline = report["ensemble"] if "ensemble" in report else report[views[0]]
            entry = {"macro_auroc": headline["macro_auroc"], "per_label_auroc": headline["per_label_auroc"],
                     "views": report}
            if role == "encoder":
                result.update(entry)
            else:
                result["baseline"] = dict(entry, name="random-init")
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
    if property_probes:
        result["property_probes"] = run_property_probes(encoders, test_source, test, image_size, seed, out)
    if out is not None:
        write_reports(out, result, figures, label_names=names)
        if "frontal" in views:
            plot_frontal_embedding(out, model, test_source, test, image_size, seed, names)
    return result


def run_property_probes(encoders, source, test, image_size, seed, directory=None):
    """ACE's property probes (paper 004 §5.1) of every encoder role on the frontal test images.

    Compositionality uses ``image_size // 2``-pixel patches; decompositionality and retrieval use batches of
    32 images as the paper (fewer when the test split is smaller: chance is then ``1 / batch_size``).
    Writes ``property_probes.{json,md}`` and ``compositionality.png`` into ``directory`` when given.
    """
    images = load_images(source, view_records(test, "frontal"), image_size)
    batch_size = min(32, len(images))
    if batch_size < 2:
        raise ValueError(f"Expected at least 2 frontal test images for the property probes. Received: {len(images)}")
    names = {"encoder": "pretrained", "baseline": "random init"}
    summary, distributions = {}, {}
    for role, candidate in encoders.items():
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


def write_reports(directory, result, figures, label_names):
    """``<protocol>.json`` (every number), ``<protocol>.md`` (summary table) and ``roc_<protocol>_<view>.png``;
    with a list of budgets also ``auroc_vs_budget.png`` and a budget table."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = "linear_probe" if result["protocol"] == "linear" else "finetune"
    (directory / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    views = list(result["views"])
    shift = f" on {result['test_data']['data']}" if "test_data" in result else ""
    lines = [f"# {stem.replace('_', ' ').capitalize()} (macro AUROC{shift})", "",
             "| encoder | " + " | ".join(views) + " |", "|---|" + "---|" * len(views)]
    rows = [("pretrained", result)] + ([("random init", result["baseline"])] if "baseline" in result else [])
    for name, entry in rows:
        lines.append(f"| {name} | " + " | ".join(f"{entry['views'][v]['macro_auroc']:.4f}" for v in views) + " |")
    if "budgets" in result:
        lines += budget_table(result["budgets"], views)
        write_budget_figure(directory / "auroc_vs_budget.png", result["budgets"], stem)
    (directory / f"{stem}.md").write_text("\n".join(lines) + "\n")
    for view, (labels, scores) in figures["encoder"].items():
        plot_roc_curves(labels, scores, label_names, directory / f"roc_{stem}_{view}.png",
                        title=f"{stem.replace('_', ' ')}, {view}: ROC per label")


def budget_table(budgets, views):
    """Markdown lines: macro AUROC per view (and of the random-init baseline) for every label budget."""
    baseline = "baseline_macro_auroc" in budgets[0]
    lines = ["", "## Macro AUROC by label budget", "",
             "| label budget | " + " | ".join(views) + (" | random init |" if baseline else " |"),
             "|---|" + "---|" * (len(views) + baseline)]
    for entry in budgets:
        cells = [f"{entry['views'][v]:.4f}" for v in views]
        cells += [f"{entry['baseline_macro_auroc']:.4f}"] if baseline else []
        budget = "all" if entry["labels"] is None else f"{entry['labels']:g}"
        lines.append(f"| {budget} | " + " | ".join(cells) + " |")
    return lines


def write_budget_figure(path, budgets, stem):
    """Headline macro AUROC against the label budget, pretrained (and random init) (paper 000 Fig. 3)."""
    curves = {"pretrained": {b["x"]: b["macro_auroc"] for b in budgets}}
    if "baseline_macro_auroc" in budgets[0]:
        curves["random init"] = {b["x"]: b["baseline_macro_auroc"] for b in budgets}
    plot_auroc_vs_budget(curves, path, title=f"{stem.replace('_', ' ').capitalize()}: macro AUROC vs label budget")


def write_cv_reports(directory, result):
    """``cv_<protocol>.json`` (every fold's AUROC) and ``cv_<protocol>.md``: mean ± std of the per-repeat
    means per method and the Wilcoxon p-value (paper 001 Tables 4-5)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = "cv_linear_probe" if result["protocol"] == "linear" else "cv_finetune"
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
    """t-SNE of the frozen features of the frontal test images, coloured by their finding."""
    records = view_records(test, "frontal")
    images = load_images(source, records, image_size)
    colours = [" + ".join(n for n, v in zip(label_names, r.labels) if v) or "no finding" for r in records]
    colours = [c if c.count("+") == 0 else "several findings" for c in colours]
    plot_embedding(extract_features(encoder, images), colours, pathlib.Path(directory) / "embedding_frontal.png",
                   title="Frontal test images: t-SNE of encoder features", seed=seed)
