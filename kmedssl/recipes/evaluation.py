"""``evaluate``: linear-probe a pretrained encoder on the phantom pathology labels (SPEC §5, §9)."""

import collections
import json
import pathlib

import keras
import numpy as np

from kmedssl.data.sources import open_source, split_records
from kmedssl.eval import (
    extract_features,
    fit_finetune,
    fit_linear_probe,
    macro_auroc,
    per_label_auroc,
    plot_embedding,
    plot_roc_curves,
    random_init_copy,
    subgroup_auroc,
)
from kmedssl.recipes import runs

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
        return load_encoder_file(file), path, recipe
    if path.suffix == ".keras" and path.is_file():
        return load_encoder_file(path), None, {}
    raise FileNotFoundError(f"Expected a run directory or an ENCODER.keras file. Received: {encoder!r} (not found)")


def load_encoder_file(path):
    import kmedssl.backbones  # noqa: F401  (registers the backbone classes for deserialisation)

    return keras.saving.load_model(path, safe_mode=True)


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


def probe_view(encoder, source, train, test, view, image_size, protocol, seed):
    """Fit on the ``view`` images of ``train``; the ``view`` test records and their probabilities."""
    train_records, test_records = view_records(train, view), view_records(test, view)
    if not train_records or not test_records:
        raise ValueError(f"Expected {view} images in the training and test splits. Received: "
                         f"{len(train_records)} and {len(test_records)}; choose other --views")
    images = lambda rs: np.stack([source.load_image(r, image_size)[..., None] for r in rs])  # noqa: E731
    labels = np.asarray([r.labels for r in train_records], dtype="float32")
    return test_records, fit_predict(protocol, encoder, images(train_records), labels, images(test_records), seed)


def study_scores(records, scores):
    """Mean score per study: {(subject, study): (K,)}."""
    grouped = collections.defaultdict(list)
    for record, score in zip(records, scores):
        grouped[(record.subject_id, record.study_id)].append(score)
    return {key: np.mean(values, axis=0) for key, values in grouped.items()}


def view_report(labels, scores, label_names):
    per_label = per_label_auroc(labels, scores, label_names)
    return {"macro_auroc": macro_auroc(per_label), "per_label_auroc": per_label, "n_test": int(len(labels))}


def probe_report(encoder, source, train, test, views, image_size, protocol, seed):
    """Per-view AUROC reports (+ sex/age subgroups per image view); ``ensemble`` fuses the frontal and
    lateral study probabilities (mean). Also returns ``{view: (labels, scores)}`` for the ROC figures."""
    names = source.label_names
    study_labels = {(r.subject_id, r.study_id): np.asarray(r.labels, "float32") for r in test}
    per_view_scores, report, curves = {}, {}, {}
    for view in ("frontal", "lateral"):
        if view in views or "ensemble" in views:
            records, scores = probe_view(encoder, source, train, test, view, image_size, protocol, seed)
            per_view_scores[view] = study_scores(records, scores)
            if view in views:
                labels = np.asarray([r.labels for r in records], "float32")
                report[view] = dict(view_report(labels, scores, names),
                                    subgroups=subgroup_auroc(records, scores, names))
                curves[view] = (labels, scores)
    if "ensemble" in views:
        both = sorted(set(per_view_scores["frontal"]) & set(per_view_scores["lateral"]))
        fused = np.stack([(per_view_scores["frontal"][k] + per_view_scores["lateral"][k]) / 2 for k in both])
        labels = np.stack([study_labels[k] for k in both])
        report["ensemble"] = view_report(labels, fused, names)
        curves["ensemble"] = (labels, fused)
    return report, curves


def evaluate(encoder, data="phantom", protocol="linear", labels=None, views=VIEWS, seed=0, baseline=None,
             output_dir=None, format=None):
    """Linear-probe or fine-tune ``encoder`` on chest pathology labels, per view and ensembled (SPEC §5).

    Args:
        encoder: a Keras encoder, an ``ENCODER.keras`` file, or a run directory.
        data: ``"phantom"`` or a chest radiograph data path (``format`` inferred when None). On the phantom,
            when ``encoder`` is a chest run, its cohort and subject split are reused so that test subjects
            were never seen in pretraining; on a path, the official split is used when the data has one.
        protocol: ``"linear"`` (frozen features, one logistic regression per label) or ``"finetune"``
            (a copy of the encoder and a linear head trained end to end: paper 001 Table 3, 10 epochs,
            batch 32, Adam 1e-4, StepLR(5, 0.1)).
        labels: label budget: None (all training studies), a count of studies, or a fraction.
        views: any of ``("frontal", "lateral", "ensemble")``.
        seed: seed of the label budget and the probes.
        baseline: ``"random"`` also probes a randomly initialised copy of the encoder.
        output_dir: where to write ``reports/`` (default: the run directory, if any).

    Returns:
        dict with ``macro_auroc`` and ``per_label_auroc`` (of the ensemble when evaluated, else of the first
        view), ``views`` (every view's report) and, with a baseline, ``baseline`` (the same for it).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Expected protocol in {PROTOCOLS}. Received: protocol={protocol!r}")
    views = tuple(views)
    bad = [v for v in views if v not in VIEWS]
    if bad or not views:
        raise ValueError(f"Expected views from {VIEWS}. Received: {views}")
    if baseline not in (None, "random"):
        raise ValueError(f"Expected baseline None or 'random'. Received: baseline={baseline!r}")
    model, run_dir, recipe = load_encoder(encoder)
    same_data = recipe.get("data_kind", "chest") == "chest" and data == "phantom"  # reuse its cohort and split
    source = open_source(
        data, kind="chest", size=recipe.get("data_size", 500) if same_data else 500,
        seed=recipe.get("data_seed", 0) if same_data else 0, format=format,
    )
    splits = split_records(source, seed=recipe.get("split_seed", 0) if same_data else 0)
    if not source.label_names:
        raise ValueError(f"Expected labelled data for a linear probe. Received: {data!r} has no labels")
    train = label_budget(splits["train"], labels, seed)
    image_size = recipe.get("image_size", getattr(model, "image_size", 64))

    encoders = {"encoder": model}
    if baseline == "random":
        encoders["baseline"] = random_init_copy(model, seed)
    result = {"protocol": protocol, "labels": labels, "views": {}, "image_size": image_size}
    figures = {}
    for role, candidate in encoders.items():
        report, curves = probe_report(candidate, source, train, splits["test"], views, image_size, protocol, seed)
        figures[role] = curves
        headline = report["ensemble"] if "ensemble" in report else report[views[0]]
        entry = {"macro_auroc": headline["macro_auroc"], "per_label_auroc": headline["per_label_auroc"],
                 "views": report}
        if role == "encoder":
            result.update(entry)
        else:
            result["baseline"] = dict(entry, name="random-init")
    out = pathlib.Path(output_dir) if output_dir else (run_dir / runs.REPORTS_DIR if run_dir else None)
    if out is not None:
        write_reports(out, result, figures, label_names=source.label_names)
        if "frontal" in views:
            plot_frontal_embedding(out, model, source, splits["test"], image_size, seed)
    return result


def write_reports(directory, result, figures, label_names):
    """``<protocol>.json`` (every number), ``<protocol>.md`` (summary table) and ``roc_<protocol>_<view>.png``."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = "linear_probe" if result["protocol"] == "linear" else "finetune"
    (directory / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    views = list(result["views"])
    lines = [f"# {stem.replace('_', ' ').capitalize()} (macro AUROC)", "", "| encoder | " + " | ".join(views) + " |",
             "|---|" + "---|" * len(views)]
    rows = [("pretrained", result)] + ([("random init", result["baseline"])] if "baseline" in result else [])
    for name, entry in rows:
        lines.append(f"| {name} | " + " | ".join(f"{entry['views'][v]['macro_auroc']:.4f}" for v in views) + " |")
    (directory / f"{stem}.md").write_text("\n".join(lines) + "\n")
    for view, (labels, scores) in figures["encoder"].items():
        plot_roc_curves(labels, scores, label_names, directory / f"roc_{stem}_{view}.png",
                        title=f"{stem.replace('_', ' ')}, {view}: ROC per label")


def plot_frontal_embedding(directory, encoder, source, test, image_size, seed):
    """t-SNE of the frozen features of the frontal test images, coloured by their finding."""
    records = view_records(test, "frontal")
    images = np.stack([source.load_image(r, image_size)[..., None] for r in records])
    names = source.label_names
    colours = [" + ".join(n for n, v in zip(names, r.labels) if v) or "no finding" for r in records]
    colours = [c if c.count("+") == 0 else "several findings" for c in colours]
    plot_embedding(extract_features(encoder, images), colours, pathlib.Path(directory) / "embedding_frontal.png",
                   title="Frontal test images: t-SNE of encoder features", seed=seed)
