"""The dense evaluations of an encoder (SPEC §5; ACE 004 §4, §5.2, §A.1, §B.2): segmentation Dice, landmark
error and zero-shot correspondence, per label budget, with 95 % intervals and the paired difference to a
from-scratch copy of the same encoder.

``evaluate_dense(encoder, task, data)`` in stages:

1. **Data** (``dense_split``): ``data="phantom"`` renders the frontal views of a training ``ChestCohort``
   (``train_size`` subjects, the run's ``data_seed``) and of a separate test cohort (``test_size`` subjects,
   seed ``DENSE_TEST_SEED``) with their ground truth (``cohort.ground_truth(record, image_size)``: masks and
   landmarks); a path is read by ``kmedssl.data.formats.read_dense`` (SIIM-ACR, JSRT, ChestX-Det, image + mask
   folder), frontal images only (and images of unknown view), split by the data set's own split when it has
   one, else the seeded 80/10/10 subject split (``kmedssl.data.splits.subject_split``; the validation part is
   not used). Images are centre-cropped and resized to the encoder's ``image_size`` as every image
   (``kmedssl.data.images.preprocess``), masks the same way with nearest-neighbour resampling, landmarks mapped
   through the same crop and scale.
2. **Budgets**: each label budget is a seeded, nested subset of the training studies
   (``evaluate.label_budget``: a fraction, a count of studies — few-shot: 2, 5, 10 — or None for all).
3. **Fit and score**: ``kmedssl.eval.dense.finetune_segmentation`` (UperNet, per-image Dice),
   ``kmedssl.eval.landmarks.finetune_landmarks`` (heatmaps, per-image landmark error in pixels) or
   ``kmedssl.eval.correspondence.evaluate_correspondence`` (no training: test image pairs of different
   subjects, seeded), for the encoder and, with ``baseline="scratch"``, for a random-init copy of it
   (``evaluate.baseline_encoder``) trained the same way.
4. **Report**: per budget the mean [95 % CI] (cluster bootstrap over test studies), per structure or landmark,
   and the paired difference pretrained - scratch on the same test images (``paired_mean_difference`` of the
   per-image means) with its p-value; ``TASK.json``, ``TASK.md`` and (segmentation, landmarks) ``TASK_overlays.png``
   in ``output_dir`` (default: the run directory's ``reports/``).
"""

import collections
import json
import math
import pathlib
import warnings

import numpy as np
from PIL import Image

from kmedssl.data.records import FRONTAL_VIEWS
from kmedssl.data.splits import subject_split
from kmedssl.eval.dense_metrics import paired_mean_difference
from kmedssl.eval.evaluate import Progress, baseline_encoder, label_budget, load_encoder, parse_baseline
from kmedssl.eval.intervals import format_interval
from kmedssl.training import runs

TASKS = ("segmentation", "landmarks", "correspondence")
DENSE_BASELINES = ("scratch",)
# Phantom structures fine-tuned by default: the anatomy of JSRT/SCR and SIIM's pneumothorax rim.
DEFAULT_STRUCTURES = ("heart", "lung_right", "lung_left", "clavicle_right", "clavicle_left", "pneumothorax_visible")
DENSE_TRAIN_SUBJECTS = 100  # phantom training cohort (subjects; 1-3 studies each, frontal views used)
DENSE_TEST_SUBJECTS = 50  # phantom test cohort
DENSE_TEST_SEED = 104729  # the phantom test cohort's seed: other subjects than any training cohort's default
OVERLAY_IMAGES = 4
METRICS = {"segmentation": ("Dice", True), "landmarks": ("error (px)", False), "correspondence": ("error (px)", False)}

DenseSplit = collections.namedtuple("DenseSplit", "images masks points visible groups subjects items")
DenseSplit.__doc__ = """One split at the encoder's size: ``images`` (N, S, S, 1) float32 in [0, 1]; ``masks``
(N, S, S, K) bool; ``points`` (N, L, 2) (x, y) pixels and ``visible`` (N, L) bool; ``groups`` (N,) ``"subject/study"``;
``subjects`` (N,); ``items`` the ``Item``s ``label_budget`` draws from."""
Item = collections.namedtuple("Item", "subject_id study_id index")


# === Data ===


def square_mask(mask, size):
    """A mask centre-cropped to a square and resized to ``(size, size)`` by nearest neighbour (as
    ``images.preprocess`` crops the image)."""
    mask = np.asarray(mask, bool)
    height, width = mask.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = mask[top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(square)
    resized = Image.fromarray(square.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(resized) >= 128


def square_points(points, visible, shape, size):
    """``(L, 2)`` (x, y) pixels of an image of ``shape`` mapped through ``preprocess``'s centre crop and resize
    to ``size``; a point that leaves the image is not visible."""
    height, width = shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    scale = size / side
    points = np.asarray(points, np.float64).reshape(-1, 2)
    moved = np.stack([(points[:, 0] - left + 0.5) * scale - 0.5, (points[:, 1] - top + 0.5) * scale - 0.5], axis=1)
    with np.errstate(invalid="ignore"):
        inside = np.all((moved >= -0.5) & (moved <= size - 0.5), axis=1)
    return moved, np.asarray(visible, bool) & inside


def _stack(images, masks, points, visible, groups, subjects, structures, landmarks, image_size):
    n = len(images)
    empty = np.zeros((0, image_size, image_size, 1), "float32")
    return DenseSplit(
        images=np.stack(images)[..., None].astype("float32") if n else empty,
        masks=np.stack(masks) if n else np.zeros((0, image_size, image_size, len(structures)), bool),
        points=np.stack(points) if n else np.zeros((0, len(landmarks), 2)),
        visible=np.stack(visible) if n else np.zeros((0, len(landmarks)), bool),
        groups=np.asarray(groups), subjects=np.asarray(subjects),
        items=[Item(s, g, i) for i, (s, g) in enumerate(zip(subjects, groups))])


def phantom_split(records, cohort, image_size, structures):
    """A ``DenseSplit`` of the frontal ``records`` of a ``ChestCohort`` rendered at ``image_size``."""
    from kmedssl.data.phantom.ground_truth import LANDMARKS

    images, masks, points, visible, groups, subjects = [], [], [], [], [], []
    for record in records:
        if record.view not in FRONTAL_VIEWS:
            continue
        truth = cohort.ground_truth(record, image_size)
        images.append(np.asarray(cohort.render(record, image_size=image_size), "float32"))
        masks.append(np.stack([truth.masks[name] for name in structures], axis=-1))
        points.append(np.asarray([(truth.landmarks[k].x, truth.landmarks[k].y) for k in LANDMARKS], np.float64))
        visible.append(np.asarray([truth.landmarks[k].visible for k in LANDMARKS], bool))
        groups.append(f"{record.subject_id}/{record.study_id}")
        subjects.append(record.subject_id)
    return _stack(images, masks, points, visible, groups, subjects, structures, LANDMARKS, image_size)


def file_split(dataset, records, image_size, structures):
    """A ``DenseSplit`` of ``records`` of a ``DenseDataset``, each loaded and resized to ``image_size``."""
    from kmedssl.data.images import preprocess

    images, masks, points, visible, groups, subjects = [], [], [], [], [], []
    for record in records:
        image, found = dataset.load(record)
        images.append(preprocess(image, image_size))
        masks.append(np.stack([square_mask(found[name], image_size) for name in structures], axis=-1))
        marks = np.asarray([m[:2] for m in record.landmarks], np.float64).reshape(-1, 2)
        moved, seen = square_points(marks, [bool(m[2]) for m in record.landmarks], image.shape, image_size)
        points.append(moved)
        visible.append(seen)
        groups.append(f"{record.subject_id}/{record.study_id}")
        subjects.append(record.subject_id)
    return _stack(images, masks, points, visible, groups, subjects, structures, dataset.landmark_names, image_size)


def choose_structures(structures, available):
    """The structures to fine-tune: ``structures`` (each checked), else ``DEFAULT_STRUCTURES`` found in
    ``available``, else all of ``available``."""
    available = tuple(available)
    if structures is None:
        return tuple(s for s in DEFAULT_STRUCTURES if s in available) or available
    structures = (structures,) if isinstance(structures, str) else tuple(structures)
    unknown = [s for s in structures if s not in available]
    if unknown or not structures:
        raise ValueError(f"Expected structures from {list(available)}. Received: structures={list(structures)}")
    return structures


def dense_split(data, image_size, structures=None, format=None, seed=0, train_size=DENSE_TRAIN_SUBJECTS,
                test_size=DENSE_TEST_SUBJECTS, data_seed=0, on_error="raise"):
    """``(train DenseSplit, test DenseSplit, structures, landmark names, description)`` of ``data``."""
    if data == "phantom":
        from kmedssl.data.phantom import ChestCohort
        from kmedssl.data.phantom.ground_truth import LANDMARKS, STRUCTURES

        structures = choose_structures(structures, STRUCTURES)
        train_cohort = ChestCohort(num_subjects=train_size, seed=data_seed)
        test_cohort = ChestCohort(num_subjects=test_size, seed=DENSE_TEST_SEED)
        train = phantom_split(train_cohort.records, train_cohort, image_size, structures)
        test = phantom_split(test_cohort.records, test_cohort, image_size, structures)
        where = (f"the phantom: {train_size} training subjects (seed {data_seed}), a test cohort of {test_size} "
                 f"other subjects (seed {DENSE_TEST_SEED}), frontal views")
        return train, test, structures, LANDMARKS, where
    from kmedssl.data.formats import read_dense

    dataset = read_dense(data, format=format, on_error=on_error)
    structures = choose_structures(structures, dataset.structures)
    records = [r for r in dataset.records if r.view in FRONTAL_VIEWS or not r.view]
    if any(r.split for r in records):
        parts = {name: [r for r in records if r.split == name] for name in ("train", "test")}
        how = "the data set's split"
    else:
        parts = subject_split(records, seed=seed)
        how = f"an 80/10/10 subject split (seed {seed})"
    if not parts["train"] or not parts["test"]:
        raise ValueError(f"Expected training and test images in {data}. Received: {len(parts['train'])} training "
                         f"and {len(parts['test'])} test images ({how})")
    train = file_split(dataset, parts["train"], image_size, structures)
    test = file_split(dataset, parts["test"], image_size, structures)
    return train, test, structures, dataset.landmark_names, f"{data} ({dataset.format} format), {how}, frontal views"


# === Tasks ===


def _to_dict(interval):
    return interval.to_dict() if hasattr(interval, "to_dict") else interval


def _per_image(task, result):
    """(N,) per-image (per-pair) means of one fit: mean Dice over structures, or mean error over landmarks."""
    if task == "segmentation":
        return np.asarray(result["per_image_dice"], np.float64).mean(axis=1)
    values = np.asarray(result["per_image_error" if task == "landmarks" else "per_pair_error"], np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a row without a visible landmark is NaN
        return np.nanmean(values, axis=1)


def _scores(task, result):
    """The report entry of one fit (JSON-ready)."""
    if task == "segmentation":
        score, per_item, score_ci, per_item_ci = (result["mean_dice"], result["per_structure"], result["mean_dice_ci"],
                                                  result["per_structure_ci"])
    else:
        score, per_item, score_ci, per_item_ci = (result["mean_error"], result["per_landmark"], result["mean_error_ci"],
                                                  result["per_landmark_ci"])
    return {"score": float(score) if math.isfinite(score) else None, "score_ci": _to_dict(score_ci),
            "per_item": {k: (None if v is None or not math.isfinite(v) else float(v)) for k, v in per_item.items()},
            "per_item_ci": {k: _to_dict(v) for k, v in per_item_ci.items()}}


def _fit(task, encoder, train, test, names, seed, epochs, batch_size, pairs):
    """One encoder's fit (or, for correspondence, its zero-shot matching) on the test split."""
    if task == "segmentation":
        from kmedssl.eval.dense import finetune_segmentation

        options = {} if epochs is None else {"epochs": epochs}
        return finetune_segmentation(encoder, train.images, train.masks, test.images, test.masks,
                                     structure_names=names, groups=test.groups, batch_size=batch_size, seed=seed,
                                     **options)
    if task == "landmarks":
        from kmedssl.eval.landmarks import finetune_landmarks

        options = {} if epochs is None else {"epochs": epochs}
        return finetune_landmarks(encoder, train.images, train.points, train.visible, test.images, test.points,
                                  test.visible, landmark_names=names, groups=test.groups, batch_size=batch_size,
                                  seed=seed, **options)
    from kmedssl.eval.correspondence import evaluate_correspondence

    query, key = pairs[:, 0], pairs[:, 1]
    return evaluate_correspondence(encoder, test.images[query], test.points[query], test.visible[query],
                                   test.images[key], test.points[key], test.visible[key], landmark_names=names,
                                   groups=test.groups[query], seed=seed)


def correspondence_pairs(subjects, seed=0):
    """``(N, 2)`` (query, key) indices: every image once as the query, its key the next image of another
    subject in a seeded order (none when every image is of one subject)."""
    subjects = np.asarray(subjects)
    order = np.random.default_rng(seed).permutation(len(subjects))
    pairs = []
    for k, query in enumerate(order):
        for step in range(1, len(order)):
            key = order[(k + step) % len(order)]
            if subjects[key] != subjects[query]:
                pairs.append((query, key))
                break
    return np.asarray(pairs, dtype=int).reshape(-1, 2)


def _subset(split, indices):
    indices = np.asarray(indices, dtype=int)
    return split._replace(images=split.images[indices], masks=split.masks[indices], points=split.points[indices],
                          visible=split.visible[indices], groups=split.groups[indices],
                          subjects=split.subjects[indices], items=[split.items[i] for i in indices])


def evaluate_dense(encoder, task="segmentation", data="phantom", format=None, labels=None, structures=None,
                   baseline=None, seed=0, epochs=None, output_dir=None, progress=None, test_size=DENSE_TEST_SUBJECTS,
                   train_size=DENSE_TRAIN_SUBJECTS, batch_size=8, on_error="raise"):
    """Evaluate ``encoder`` on a dense task, per label budget, against an optional scratch baseline.

    Args:
        encoder: a Keras encoder, a ``.keras`` file or a run directory (``evaluate.load_encoder``).
        task: ``"segmentation"``, ``"landmarks"`` or ``"correspondence"``.
        data: ``"phantom"`` or a path in one of ``kmedssl.data.formats.DENSE_FORMATS``.
        format: the format of ``data`` (inferred when None).
        labels: a label budget or a list of them: a fraction of the training studies (0.1), a count of studies
            (few-shot: 2, 5, 10) or None (all). Not used by correspondence (no training).
        structures: segmentation targets (default: ``DEFAULT_STRUCTURES`` the data has, else all its masks).
        baseline: None or ``"scratch"`` (a random-init copy of the encoder trained the same way).
        seed: seed of the split, budgets, fits, pairs and bootstrap.
        epochs: fine-tuning epochs (default: the fine-tuning function's, 30).
        output_dir: where to write the reports (default: the run directory's ``reports/``; None writes nothing
            for an encoder that is no run).
        progress: ``progress(done, total, what)`` as each long step starts.
        test_size, train_size: subjects of the phantom's test and training cohorts (``data="phantom"``).
        batch_size: fine-tuning batch size.
        on_error: the dense reader's policy for a bad file (``"raise"`` or ``"skip"``).

    Returns:
        dict: ``task``, ``metric`` (``"Dice"`` or ``"error (px)"``), ``higher_is_better``, ``items`` (structures
        or landmarks), ``budgets`` (one entry per budget: ``labels``, ``n_train_images``, ``score`` with
        ``score_ci``, ``per_item`` with ``per_item_ci``, and with a baseline ``baseline`` (the same for the
        scratch copy) and ``difference`` (pretrained - scratch, with ``p_value``) and ``per_item_difference``),
        ``baseline`` (``{"name": "scratch"}`` or None), ``image_size``, ``n_test_images``, ``data``,
        ``files`` (the reports written).

    Raises:
        ValueError: an unknown task, baseline, structure or budget, no training or test images, no landmarks.
    """
    if task not in TASKS:
        raise ValueError(f"Expected task in {TASKS}. Received: task={task!r}")
    if baseline is not None and baseline not in DENSE_BASELINES:
        raise ValueError(f"Expected baseline None or one of {DENSE_BASELINES} for a dense task. "
                         f"Received: baseline={baseline!r}")
    for name, value in (("test_size", test_size), ("train_size", train_size), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"Expected {name} to be a positive integer. Received: {name}={value!r}")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1):
        raise ValueError(f"Expected epochs to be a positive integer or None. Received: epochs={epochs!r}")
    budgets = list(labels) if isinstance(labels, (list, tuple)) else [labels]
    if not budgets:
        raise ValueError(f"Expected at least one label budget in the list. Received: labels={labels!r}")
    if task == "correspondence":
        budgets = [None]
    model, run_dir, recipe = load_encoder(encoder)
    image_size = int(recipe.get("image_size", getattr(model, "image_size", 64)))
    out = pathlib.Path(output_dir) if output_dir else (run_dir / runs.REPORTS_DIR if run_dir else None)
    roles = ["encoder"] + (["baseline"] if baseline else [])
    step = Progress(progress, 1 + len(budgets) * len(roles) + (out is not None))

    step(f"loading the {task} data at {image_size} px")
    train, test, structures, landmark_names, where = dense_split(
        data, image_size, structures, format=format, seed=seed, train_size=int(train_size), test_size=int(test_size),
        data_seed=recipe.get("data_seed", 0) if recipe.get("data_kind", "chest") == "chest" else 0, on_error=on_error)
    names = list(structures) if task == "segmentation" else list(landmark_names)
    if task != "segmentation" and not names:
        raise ValueError(f"Expected landmarks for task={task!r}. Received: {data!r} has none (the phantom and the "
                         f"image + mask folder's landmarks.csv have them)")
    pairs = correspondence_pairs(test.subjects, seed) if task == "correspondence" else None
    if task == "correspondence" and not len(pairs):
        raise ValueError("Expected test images of at least two subjects for correspondence pairs.")
    encoders = {"encoder": model}
    if baseline:
        encoders["baseline"] = baseline_encoder(parse_baseline(baseline), model, seed)
    metric, higher = METRICS[task]
    result = {"task": task, "metric": metric, "higher_is_better": higher, "items": names, "data": str(data),
              "data_description": where, "image_size": image_size, "n_test_images": int(len(test.images)),
              "n_pairs": None if pairs is None else int(len(pairs)), "seed": seed, "epochs": epochs,
              "baseline": {"name": baseline} if baseline else None, "budgets": []}
    fits = {}
    for budget in budgets:
        chosen = train if task == "correspondence" else _subset(
            train, [item.index for item in label_budget(train.items, budget, seed)])
        fits = {}
        for role, network in encoders.items():
            step(f"{task}: {'pretrained' if role == 'encoder' else baseline} encoder, labels "
                 f"{'all' if budget is None else budget} ({len(chosen.images)} training images)")
            fits[role] = _fit(task, network, chosen, test, names, seed, epochs, batch_size, pairs)
        entry = {"labels": budget, "n_train_images": 0 if task == "correspondence" else int(len(chosen.images)),
                 **_scores(task, fits["encoder"])}
        if baseline:
            entry["baseline"] = _scores(task, fits["baseline"])
            groups = test.groups if pairs is None else test.groups[pairs[:, 0]]
            entry["difference"] = _to_dict(paired_mean_difference(
                _per_image(task, fits["encoder"]), _per_image(task, fits["baseline"]), groups, seed=seed))
            entry["per_item_difference"] = {
                name: _to_dict(paired_mean_difference(*(_item_values(task, fits[r], k) for r in roles), groups,
                                                      seed=seed)) for k, name in enumerate(names)}
        result["budgets"].append(entry)
    result["files"] = []
    if out is not None:
        step("writing the reports")
        result["files"] = write_dense_reports(out, result, fits, test)
    step.finish()
    return result


def _item_values(task, result, k):
    key = {"segmentation": "per_image_dice", "landmarks": "per_image_error", "correspondence": "per_pair_error"}[task]
    return np.asarray(result[key], np.float64)[:, k]


# === Reports ===


def budget_name(budget):
    return "all" if budget is None else format(budget, "g")


def dense_table(result):
    """Markdown lines: one row per budget (score [CI], scratch, difference [CI], p) and one per item at the
    last budget."""
    metric, baseline = result["metric"], result["baseline"]
    head = ["labels", "train images", f"pretrained {metric}"] + (
        [f"{baseline['name']} {metric}", "difference (pretrained - scratch)"] if baseline else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in result["budgets"]:
        cells = [budget_name(entry["labels"]), str(entry["n_train_images"]), format_interval(entry["score_ci"])]
        if baseline:
            cells += [format_interval(entry["baseline"]["score_ci"]), format_interval(entry["difference"])]
        lines.append("| " + " | ".join(cells) + " |")
    last = result["budgets"][-1]
    what = "structure" if result["task"] == "segmentation" else "landmark"
    head = [what, "pretrained"] + ([baseline["name"], "difference"] if baseline else [])
    lines += ["", f"Per {what} at labels {budget_name(last['labels'])}:", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in result["items"]:
        cells = [name, format_interval(last["per_item_ci"][name])]
        if baseline:
            cells += [format_interval(last["baseline"]["per_item_ci"][name]),
                      format_interval(last["per_item_difference"][name])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_dense_reports(directory, result, fits, test):
    """Write ``TASK.json``, ``TASK.md`` and, for segmentation and landmarks, ``TASK_overlays.png`` (the last
    budget's predictions on the first test images); returns the paths written."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    task = result["task"]
    files = []
    if task == "segmentation":
        files.append(plot_overlays(directory / f"{task}_overlays.png", fits, test, result["items"]))
    elif task == "landmarks":
        files.append(plot_landmark_overlays(directory / f"{task}_overlays.png", fits, test, result["items"]))
    report = {key: value for key, value in result.items() if key != "files"}
    (directory / f"{task}.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    direction = "higher is better" if result["higher_is_better"] else "lower is better"
    text = [f"# {task.capitalize()}: {result['metric']} ({direction})", "",
            f"Data: {result['data_description']}; {result['n_test_images']} test images at {result['image_size']} px. "
            f"Intervals: 95 % cluster bootstrap over test studies; the difference is paired on the same test images.",
            ""] + dense_table(result)
    (directory / f"{task}.md").write_text("\n".join(text) + "\n")
    return files + [directory / f"{task}.json", directory / f"{task}.md"]


def _overlay_grid(path, fits, test, names, count, predict, draw):
    """The overlays' PNG grid: per test image (rows) a "truth" column, then one per model of ``fits``
    (``predict(model, images)`` its predictions on the first ``count`` test images); ``draw(axes, row,
    prediction, colors)`` draws one cell (``prediction`` None in the truth column); one colour per name."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from kmedssl.eval.plots import DPI, _colors

    count = min(count, len(test.images))
    columns = [("truth", None)] + [("pretrained" if role == "encoder" else "scratch", fit)
                                   for role, fit in fits.items()]
    predicted = {title: predict(fit["model"], test.images[:count]) for title, fit in columns if fit is not None}
    colors = np.asarray([c[:3] for c in _colors(len(names))])
    figure = Figure(figsize=(2.2 * len(columns), 2.2 * count))
    FigureCanvasAgg(figure)
    for row in range(count):
        for column, (title, _) in enumerate(columns):
            axes = figure.add_subplot(count, len(columns), row * len(columns) + column + 1)
            draw(axes, row, None if title == "truth" else predicted[title][row], colors)
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title(title, fontsize=9)
    figure.legend(handles=[_patch(colors[k], name) for k, name in enumerate(names)], loc="lower center",
                  ncol=min(3, len(names)), fontsize=7)
    path = pathlib.Path(path)
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def plot_overlays(path, fits, test, names, count=OVERLAY_IMAGES):
    """A PNG grid: per test image (rows) the true masks, then each model's predicted masks (filled, one colour
    per structure)."""
    from kmedssl.eval.dense import predict_masks

    def draw(axes, row, masks, colors):
        masks = test.masks[row] if masks is None else masks
        image = np.repeat(test.images[row], 3, axis=-1)
        for k in range(len(names)):
            image = np.where(masks[..., k:k + 1], 0.55 * image + 0.45 * colors[k], image)
        axes.imshow(np.clip(image, 0, 1), interpolation="nearest")

    return _overlay_grid(path, fits, test, names, count, predict_masks, draw)


def plot_landmark_overlays(path, fits, test, names, count=OVERLAY_IMAGES):
    """A PNG grid: per test image (rows) the image with its visible true landmarks, then each model's arg-max
    detections (one colour per landmark; a cross where the truth is, a dot where the model put it)."""
    from kmedssl.eval.landmarks import predict_landmarks

    def draw(axes, row, points, colors):
        axes.imshow(test.images[row][..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        for k in np.flatnonzero(test.visible[row]):
            axes.scatter(*test.points[row, k], marker="x", s=14, color=colors[k], linewidths=0.8)
            if points is not None:
                axes.scatter(*points[k], marker="o", s=10, color=colors[k])

    return _overlay_grid(path, fits, test, names, count, predict_landmarks, draw)


def _patch(color, name):
    from matplotlib.patches import Patch

    return Patch(color=color, label=name)
