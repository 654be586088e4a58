"""``evaluate``: linear-probe a pretrained encoder on the phantom pathology labels (SPEC §5, §9)."""

import collections
import json
import pathlib

import keras
import numpy as np

from kmedssl.data.sources import open_source, split_records
from kmedssl.eval import extract_features, fit_linear_probe, macro_auroc, per_label_auroc, random_init_copy
from kmedssl.recipes import runs

VIEWS = ("frontal", "lateral", "ensemble")
PROTOCOLS = ("linear",)


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


def probe_view(encoder, source, train, test, view, image_size, seed):
    """Fit a probe on ``view`` images of ``train``; per-image test probabilities keyed by record."""
    train_records, test_records = view_records(train, view), view_records(test, view)
    if not train_records or not test_records:
        raise ValueError(f"Expected {view} images in the training and test splits. Received: "
                         f"{len(train_records)} and {len(test_records)}; choose other --views")
    images = lambda rs: np.stack([source.load_image(r, image_size)[..., None] for r in rs])  # noqa: E731
    labels = lambda rs: np.asarray([r.labels for r in rs], dtype="float32")  # noqa: E731
    predict = fit_linear_probe(extract_features(encoder, images(train_records)), labels(train_records), seed=seed)
    return test_records, predict(extract_features(encoder, images(test_records)))


def study_scores(records, scores):
    """Mean score per study: {(subject, study): (K,)}."""
    grouped = collections.defaultdict(list)
    for record, score in zip(records, scores):
        grouped[(record.subject_id, record.study_id)].append(score)
    return {key: np.mean(values, axis=0) for key, values in grouped.items()}


def view_report(labels, scores, label_names):
    per_label = per_label_auroc(labels, scores, label_names)
    return {"macro_auroc": macro_auroc(per_label), "per_label_auroc": per_label, "n_test": int(len(labels))}


def linear_probe_report(encoder, source, train, test, views, image_size, seed):
    """Per-view AUROC reports; ``ensemble`` fuses the frontal and lateral study probabilities (mean)."""
    names = source.label_names
    study_labels = {(r.subject_id, r.study_id): np.asarray(r.labels, "float32") for r in test}
    per_view_scores, report = {}, {}
    for view in ("frontal", "lateral"):
        if view in views or "ensemble" in views:
            records, scores = probe_view(encoder, source, train, test, view, image_size, seed)
            per_view_scores[view] = study_scores(records, scores)
            if view in views:
                report[view] = view_report(np.asarray([r.labels for r in records], "float32"), scores, names)
    if "ensemble" in views:
        both = sorted(set(per_view_scores["frontal"]) & set(per_view_scores["lateral"]))
        fused = np.stack([(per_view_scores["frontal"][k] + per_view_scores["lateral"][k]) / 2 for k in both])
        report["ensemble"] = view_report(np.stack([study_labels[k] for k in both]), fused, names)
    return report


def evaluate(encoder, data="phantom", protocol="linear", labels=None, views=VIEWS, seed=0, baseline=None,
             output_dir=None, format=None):
    """Linear-probe ``encoder`` on the phantom chest pathology labels, per view and ensembled.

    Args:
        encoder: a Keras encoder, an ``ENCODER.keras`` file, or a run directory.
        data: ``"phantom"`` or a chest radiograph data path (``format`` inferred when None). On the phantom,
            when ``encoder`` is a chest run, its cohort and subject split are reused so that test subjects
            were never seen in pretraining; on a path, the official split is used when the data has one.
        protocol: ``"linear"`` (frozen features, one logistic regression per label).
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
    for role, candidate in encoders.items():
        report = linear_probe_report(candidate, source, train, splits["test"], views, image_size, seed)
        headline = report["ensemble"] if "ensemble" in report else report[views[0]]
        entry = {"macro_auroc": headline["macro_auroc"], "per_label_auroc": headline["per_label_auroc"],
                 "views": report}
        if role == "encoder":
            result.update(entry)
        else:
            result["baseline"] = dict(entry, name="random-init")
    out = pathlib.Path(output_dir) if output_dir else (run_dir / runs.REPORTS_DIR if run_dir else None)
    if out is not None:
        write_reports(out, result)
    return result


def write_reports(directory, result):
    """``linear_probe.json`` (every number) and ``linear_probe.md`` (a summary table)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "linear_probe.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Linear probe (macro AUROC)", "", "| encoder | " + " | ".join(result["views"]) + " |",
             "|---|" + "---|" * len(result["views"])]
    rows = [("pretrained", result)] + ([("random init", result["baseline"])] if "baseline" in result else [])
    for name, entry in rows:
        lines.append(f"| {name} | " + " | ".join(f"{entry['views'][v]['macro_auroc']:.4f}" for v in result["views"]) + " |")
    (directory / "linear_probe.md").write_text("\n".join(lines) + "\n")
