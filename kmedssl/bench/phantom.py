"""The phantom benchmark: every SSL method against scratch and the supervised baseline (paper 000 Table 1).

Each SSL method is pretrained on the phantom at its phantom recipe with the **same wall-clock budget of
optimisation**: a few ``train_on_batch`` steps on one real batch are timed after warm-up (data loading and
compilation excluded), and the budget becomes ``total_steps = max(1, floor(budget / step_time))``, run as
``steps_per_epoch = min(total_steps, one pass)`` and ``epochs = max(1, round(total_steps / steps_per_epoch))``.
So a costly method (ACE: student + EMA teacher on two crops) sees fewer images than a cheap one (MVMAE
encodes 25 % of the tokens) for the same CPU time. The wall time each pretraining really took (rendering
of the phantom images in the first epoch included) is recorded beside the budget.

Baselines: ``supervised`` (the same budget, trained on the pathology labels) and ``scratch`` (a randomly
initialised encoder), one scratch row per distinct encoder (ViT phantom/8 at 64 px; ViT phantom/4 at
64 px for S-PCL; ResNet-18 at 32 px for SimCLR and ModAn-MulSupCon), each evaluated at its image size.

Every encoder is evaluated with ``kmedssl.eval.evaluate`` in each protocol's own cells (label budget x view):
by default the **linear probe at 10 % and 100 % labels on the frontal, lateral and ensemble views**, and
**fine-tuning at 10 % labels on the frontal view only**. Fine-tuning costs about 100 times a linear probe (one
fine-tuning run of ViT phantom/4 at 100 % labels takes ~366 s of one core), so the full grid does not fit the
benchmark's 60 minutes on 2 CPU cores; the default fine-tunes the cell the phantom recipes are judged on
(docs/evaluation.md). Probes (and fine-tuned copies) are fitted on the training split of one chest cohort, on which the chest methods are pretrained
(``data_size`` set to it; the multi-modal methods pretrain on their own multi-modal phantom), and every encoder
is scored on the phantom's separate test cohort (``test_size`` studies, 2,000 by default), every macro AUROC
with its 95 % bootstrap interval. Each pretrained row is compared with the scratch row of its own encoder by
the paired difference (same test studies, same resamples) with its 95 % interval and p-value; the verdict
column ``above scratch`` counts the frontal cells (the recipes' test: fine-tuning at 10 %, the linear probe at
every budget) whose paired interval lies above 0. Written to ``output_dir``: ``phantom_benchmark.{md,json,csv}``
(Markdown: rows = encoders, columns = the cells (view, protocol, budget), a table of AUROCs and one of
differences; CSV: one line per encoder and cell with ``macro_auroc``, ``low``, ``high``, ``difference``,
``difference_low``, ``difference_high``, ``p_value``) and ``auroc_vs_budget_<protocol>_<view>.png`` per
protocol and view evaluated (paper 000 Fig. 3, with the intervals), with every evaluation's reports under
``evaluations/``, the run directories under ``pretrain/``, and the marker ``kmedssl-benchmark.txt`` by which
``overwrite`` knows the folder as a benchmark output (``BENCHMARK_LAYOUT``; anything else in it is never
deleted).

The step measurement used for the budget (``prepare_step``, ``run_steps``) is shared with ``kmedssl bench
train`` (``kmedssl.bench.train_step``), which adds the recipes it times (``step_recipe``: the phantom size, and
one ViT for every method: ViT-S/16 or ViT-B/16 at 224 px, ViT-B/16 at 512 px) and the analytic FLOPs of a step's
encoder work (``step_flops``).
"""

import csv
import json
import math
import pathlib
import re
import statistics
import time

import keras
import numpy as np

from kmedssl.data.sources import open_source, split_records
from kmedssl.data.test_cohort import TEST_COHORT_STUDIES
from kmedssl.eval import finetune_recipe, format_interval, paired_difference, plot_auroc_vs_budget
from kmedssl.ops.runtime import device_description, seed_everything
from kmedssl.training import runs
from kmedssl.recipes.base import Recipe
from kmedssl.eval.intervals import N_RESAMPLES
from kmedssl.eval.evaluate import PROTOCOLS, VIEWS, evaluate, load_encoder, read_scores, report_stem
from kmedssl.recipes.registry import RECIPES, make_recipe
from kmedssl.recipes import pretrain

SSL_METHODS = tuple(name for name, recipe in sorted(RECIPES.items()) if recipe.method_class.self_supervised)
EVAL_SUBJECTS = 500  # the chest cohort ``evaluate`` uses for runs pretrained on other data
QUICK = dict(methods=("mvcon", "mvmae"), epochs=1, steps_per_epoch=2, batch_size=8, subjects=100,
             label_budgets=(0.2,), finetune_epochs=1, test_size=100)
DEFAULT_LINEAR_BUDGETS = (0.1, 1.0)
DEFAULT_FINETUNE_BUDGETS = (0.1,)  # fine-tuning costs ~100x a linear probe: the judged cell only
DEFAULT_FINETUNE_VIEWS = ("frontal",)
BENCHMARK_HEADER = "# kmedssl phantom benchmark output"
BENCHMARK_LAYOUT = runs.Layout(
    "benchmark directory", "kmedssl-benchmark.txt", BENCHMARK_HEADER,
    files=("kmedssl-benchmark.txt", "phantom_benchmark.md", "phantom_benchmark.csv", "phantom_benchmark.json",
           "auroc_vs_budget_*.png"),
    folders=("pretrain", "evaluations"),
)
TIMED_STEPS, WARMUP_STEPS = 3, 2


def budget_schedule(step_seconds, budget_seconds, steps_per_pass):
    """``(epochs, steps_per_epoch)`` spending ``budget_seconds`` of steps that each take ``step_seconds``.

    ``total = max(1, floor(budget / step))``; ``steps_per_epoch = min(total, steps_per_pass)``;
    ``epochs = max(1, round(total / steps_per_epoch))``.
    """
    if step_seconds <= 0 or budget_seconds <= 0 or steps_per_pass < 1:
        raise ValueError(f"Expected step_seconds > 0, budget_seconds > 0 and steps_per_pass >= 1. Received: "
                         f"{step_seconds}, {budget_seconds}, {steps_per_pass}")
    total = max(1, math.floor(budget_seconds / step_seconds))
    steps_per_epoch = min(total, steps_per_pass)
    return max(1, round(total / steps_per_epoch)), steps_per_epoch


def time_step(recipe, seed, warmup=WARMUP_STEPS, steps=TIMED_STEPS):
    """Median seconds of one ``train_on_batch`` on a real batch (after ``warmup`` steps, over ``steps``
    timed steps), and the steps of one pass over the training data."""
    model, x, y, steps_per_pass = prepare_step(recipe, seed)
    run_steps(model, x, y, warmup)
    return statistics.median(run_steps(model, x, y, steps)), steps_per_pass


# === Training-step measurement (``time_step`` above, ``kmedssl bench train``) ===

STEP_SIZES = ("phantom", "vit-s16", "vit-b16", "vit-b16-512")
VIT_S16 = dict(encoder_size="small", image_size=224, patch_size=16, batch_size=16)
VIT_S16_METHOD_OVERRIDES = {
    "mvmae": dict(decoder_size="base"),  # MAE's decoder, 8 blocks x 512
    # The paper's 32 x 32 cells (C1 spans 2 x 14 of them) and DINO heads.
    "ace": dict(image_cells=32, head_dim=65536, head_hidden_dim=2048, head_bottleneck_dim=256),
}
# ViT-B/16 sizes (GPU benchmarks: MFU and the plain-PyTorch baseline, docs/performance.md): the papers' encoder
# at a batch that fills a GPU, and the papers' method settings where a phantom recipe departs from them for the
# phantom's sake (S-PCL: no per-part crop and jitter, paper 003; MVMAE: mask 0.75 and token alignment, paper 000
# Eq. 1 with MAE's masking).
VIT_B16 = dict(encoder_size="base", image_size=224, patch_size=16, batch_size=128)
VIT_B16_512 = dict(VIT_B16, image_size=512, batch_size=64)  # S-PCL's pretraining resolution (paper 003 §3.1)
VIT_B16_METHOD_OVERRIDES = {
    **VIT_S16_METHOD_OVERRIDES,
    "spcl": dict(crop_scale=(1.0, 1.0), jitter=0.0),
    "mvmae": dict(decoder_size="base", mask_ratio=0.75, alignment="tokens"),
}
STEP_SIZE_OVERRIDES = {  # size -> (encoder and batch, per-method overrides)
    "phantom": ({}, {}),
    "vit-s16": (VIT_S16, VIT_S16_METHOD_OVERRIDES),
    "vit-b16": (VIT_B16, VIT_B16_METHOD_OVERRIDES),
    "vit-b16-512": (VIT_B16_512, VIT_B16_METHOD_OVERRIDES),
}


def step_recipe(name, size="phantom", batch_size=None):
    """The recipe of method ``name`` that the step benchmark times.

    ``"phantom"``: the method's phantom recipe. ``"vit-s16"``: one encoder for every method, ViT-S/16 at
    224 px (paper 003 Table 1 compares methods by their cost per image): the phantom recipe with
    ``encoder_size="small"``, ``image_size=224``, ``patch_size=16``, batch 16, MAE's base decoder for MVMAE
    and the paper's 32 x 32 cells and DINO heads for ACE; SimCLR and ModAn-MulSupCon then train the same ViT
    (``step_encoder``) instead of their ResNet-18. ``"vit-b16"``: the same with ViT-B/16 at 224 px, batch 128,
    and the papers' method settings where the phantom recipes depart from them (S-PCL without its phantom-only
    crop and jitter per part; MVMAE with mask ratio 0.75 and token alignment); ``"vit-b16-512"``: that at
    512 px (S-PCL's pretraining size), batch 64. ``batch_size`` replaces the batch size of any size.
    """
    if size not in STEP_SIZES:
        raise ValueError(f"Expected size in {STEP_SIZES}. Received: size={size!r}")
    base, per_method = STEP_SIZE_OVERRIDES[size]
    overrides = {**base, **per_method.get(name, {})}
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    return make_recipe(name, "phantom", **overrides)


def step_encoder(recipe, size="phantom"):
    """The encoder the step benchmark trains: the recipe's own, or at the ViT sizes (``"vit-s16"``,
    ``"vit-b16"``, ``"vit-b16-512"``) the ViT of the base recipe for every method (ResNet-18 recipes included)."""
    return recipe.build_encoder() if size == "phantom" else Recipe.build_encoder(recipe)


def prepare_step(recipe, seed, encoder=None, jit_compile="auto"):
    """The compiled method model of ``recipe`` and one real batch of its input pipeline.

    Args:
        recipe: the method's recipe (data, model and optimizer come from it).
        seed: seed of weights, data and views.
        encoder: the encoder to train (default ``recipe.build_encoder()``).
        jit_compile: passed to ``model.compile`` (``"auto"``: Keras's default per backend; ``True``: XLA on
            TensorFlow and JAX, ``torch.compile`` on torch).

    Returns:
        ``(model, x, y, steps_per_pass)``: ``y`` is None for self-supervised methods.
    """
    seed_everything(seed)
    source = open_source("phantom", kind=recipe.data_kind, size=recipe.data_size, seed=recipe.data_seed)
    dataset = recipe.training_data(source, split_records(source, seed=recipe.split_seed)["train"], seed)
    batch = dataset[0]
    x, y = batch if isinstance(batch, tuple) else (batch, None)
    model = recipe.build_model(encoder or recipe.build_encoder(), total_steps=1000, seed=seed,
                               num_labels=len(source.label_names))
    model.compile(optimizer=recipe.build_optimizer(1000, 100), jit_compile=jit_compile)
    return model, x, y, len(dataset)


def run_steps(model, x, y, steps):
    """Seconds of each of ``steps`` consecutive ``model.train_on_batch(x, y)`` calls (each returns its loss
    to the host, so queued device work is included)."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return times


def step_flops(recipe, model):
    """``(forward, train)`` FLOPs per input image of one training step's encoder work (the method's
    ``encoder_work``):
    ``forward = trained + frozen``; ``train = 3 trained + frozen`` (a backward pass costs about two forward
    passes; the teacher runs forward only)."""
    trained, frozen = model.encoder_work(recipe.image_size)
    return trained + frozen, 3 * trained + frozen


def encoder_name(recipe):
    """A short name of the recipe's encoder, e.g. ``"ViT phantom/8, 64 px"`` or ``"ResNet-18 w16, 32 px"``."""
    if hasattr(recipe, "resnet_width"):
        return f"ResNet-18 w{recipe.resnet_width}, {recipe.image_size} px"
    if getattr(recipe, "encoder", "vit") == "swin":
        return f"Swin {recipe.encoder_size}, {recipe.image_size} px"
    return f"ViT {recipe.encoder_size}/{recipe.patch_size}, {recipe.image_size} px"


def method_overrides(name, quick, subjects, data_seed=0):
    """Recipe overrides: every method's phantom cohort is ``data_seed``'s; chest methods pretrain on the
    evaluation cohort (its training split is the probes' labelled data); quick runs are tiny."""
    overrides = {"data_seed": data_seed}
    if make_recipe(name).data_kind == "chest":
        overrides.update(data_size=subjects, split_seed=0)
    if quick:
        overrides.update(epochs=QUICK["epochs"], steps_per_epoch=QUICK["steps_per_epoch"],
                         batch_size=QUICK["batch_size"])
    return overrides


class EpochLog(keras.callbacks.Callback):
    """Logs each pretraining epoch's metrics through ``log`` (Keras's own output would break a progress bar)."""

    def __init__(self, name, epochs, log):
        super().__init__()
        self.name, self.epochs, self.log = name, epochs, log

    def on_epoch_end(self, epoch, logs=None):
        metrics = ", ".join(f"{key} {float(value):.4g}" for key, value in (logs or {}).items())
        self.log(f"[{self.name}] epoch {epoch + 1}/{self.epochs}: {metrics}")


def pretrain_row(name, budget_seconds, quick, subjects, seed, directory, log, data_seed=0):
    """Pretrain ``name`` within the budget; its run directory and what was spent."""
    overrides = method_overrides(name, quick, subjects, data_seed)
    entry = {"method": name, "kind": "ssl" if RECIPES[name].method_class.self_supervised else "supervised"}
    if not quick:
        start = time.perf_counter()
        step, per_pass = time_step(make_recipe(name, **overrides), seed)
        epochs, steps_per_epoch = budget_schedule(step, budget_seconds, per_pass)
        overrides.update(epochs=epochs, steps_per_epoch=steps_per_epoch)
        entry.update(step_seconds=step, timing_seconds=time.perf_counter() - start)
    log(f"[{name}] pretraining {overrides['epochs']} epoch(s) x {overrides['steps_per_epoch']} steps"
        + (f" (step {entry['step_seconds'] * 1000:.0f} ms)" if not quick else ""))
    start = time.perf_counter()
    result = pretrain(name, seed=seed, output_dir=directory / name, overwrite=True, verbose=0,
                      callbacks=[EpochLog(name, overrides["epochs"], log)], **overrides)
    entry.update(run_dir=str(result.run_dir), encoder=encoder_name(result.recipe), epochs=result.recipe.epochs,
                 steps_per_epoch=overrides["steps_per_epoch"], batch_size=result.recipe.batch_size,
                 steps=overrides["steps_per_epoch"] * result.recipe.epochs,
                 images_seen=overrides["steps_per_epoch"] * result.recipe.epochs * result.recipe.batch_size,
                 pretrain_seconds=time.perf_counter() - start)
    return entry, result.recipe


def scratch_row(recipe, seed, directory):
    """A run directory holding a randomly initialised encoder of ``recipe`` (evaluated like a pretrained one)."""
    name = f"scratch ({encoder_name(recipe)})"
    slug = re.sub(r"[^A-Za-z0-9]+", "-", encoder_name(recipe)).strip("-")  # e.g. "ViT-phantom-8-64-px"
    run_dir = runs.prepare_run_dir(directory / f"scratch-{slug}", overwrite=True)
    seed_everything(seed)
    runs.write_recipe(run_dir, recipe, seed)
    keras.saving.save_model(recipe.build_encoder(), run_dir / runs.ENCODER_FILE)
    return {"method": name, "kind": "scratch", "run_dir": str(run_dir), "encoder": encoder_name(recipe)}


def budget_label(budget):
    return f"{100 * budget:g}%" if isinstance(budget, float) and budget <= 1 else f"{budget}"


def column_name(view, protocol, budget):
    return f"{view} {protocol} {budget_label(budget)}"


def evaluation_plan(protocols, linear_budgets, finetune_budgets, finetune_views):
    """``{protocol: (label budgets, views)}``: the linear probe on every view, fine-tuning on ``finetune_views``."""
    every = {"linear": (tuple(linear_budgets), VIEWS), "finetune": (tuple(finetune_budgets), tuple(finetune_views))}
    plan = {protocol: every[protocol] for protocol in protocols}
    for protocol, (budgets, views) in plan.items():
        if not budgets or any(b <= 0 for b in budgets):
            raise ValueError(f"Expected positive {protocol} label budgets (counts or fractions). Received: {budgets}")
        if not views or any(v not in VIEWS for v in views):
            raise ValueError(f"Expected {protocol} views from {VIEWS}. Received: {views}")
    return plan


def plan_cells(plan):
    """Every evaluated ``(view, protocol, budget)``, view by view (the table's column order)."""
    return [(view, protocol, budget) for view in VIEWS for protocol, (budgets, views) in plan.items()
            if view in views for budget in budgets]


class BenchmarkProgress:
    """The benchmark's steps as ``callback(done, total, what)`` (``evaluate``'s ``progress``): ``start(what,
    weight)`` begins a step of ``weight`` units (about a minute each: a pretraining weighs its budget in
    minutes, an ``evaluate`` call 1), ``detail(what)`` shows what the running step does now. A no-op when
    ``callback`` is None."""

    def __init__(self, callback, total):
        self.callback, self.total, self.done, self.weight = callback, total, 0, 0

    def start(self, what, weight=1):
        self.done, self.weight = self.done + self.weight, weight
        self.detail(what)

    def detail(self, what):
        if self.callback is not None:
            self.callback(min(self.done, self.total), self.total, what)

    def finish(self):
        if self.callback is not None:
            self.callback(self.total, self.total, "done")


def quick_finetune_recipe(run_dir):
    """The phantom fine-tuning recipe of the run's encoder family, shortened to ``QUICK["finetune_epochs"]``."""
    return finetune_recipe(load_encoder(run_dir)[0], "phantom").replace(epochs=QUICK["finetune_epochs"])


def evaluate_row(entry, plan, seed, directory, progress, quick=False, test_size=TEST_COHORT_STUDIES):
    """``entry["auroc"][view][protocol][budget label]`` = macro AUROC of every cell of ``plan``,
    ``entry["auroc_ci"]`` the same with its 95 % interval, ``entry["scores"][protocol][budget label]`` the
    evaluation's test scores (``read_scores``), and the test sizes and seconds. ``progress``: a
    ``BenchmarkProgress``, one step per ``evaluate`` call."""
    entry.update(auroc={}, auroc_ci={}, scores={p: {} for p in plan}, n_test={}, n_test_studies={},
                 evaluate_seconds=0.0)
    slug = pathlib.Path(entry["run_dir"]).name
    recipe = quick_finetune_recipe(entry["run_dir"]) if quick and "finetune" in plan else None
    for protocol, (budgets, views) in plan.items():
        for budget in budgets:
            label = budget_label(budget)
            what = f"[{entry['method']}] {protocol} {label} ({', '.join(views)})"
            progress.start(what)
            start = time.perf_counter()
            output = directory / slug / f"{protocol}-labels-{budget}"
            report = evaluate(entry["run_dir"], protocol=protocol, labels=budget, views=views, seed=seed,
                              output_dir=output, test_size=test_size, finetune_recipe=recipe,
                              progress=lambda done, total, step: progress.detail(f"{what} {done}/{total}: {step}"))
            entry["evaluate_seconds"] += time.perf_counter() - start
            entry["scores"][protocol][label] = str(output / f"{report_stem(protocol)}_scores.npz")
            for view in views:
                view_report = report["views"][view]
                entry["auroc"].setdefault(view, {}).setdefault(protocol, {})[label] = view_report["macro_auroc"]
                entry["auroc_ci"].setdefault(view, {}).setdefault(protocol, {})[label] = view_report["macro_auroc_ci"]
                entry["n_test"][view] = view_report["n_test"]
                entry["n_test_studies"][view] = view_report["n_test_studies"]
            entry.setdefault("test_cohort", report.get("test_cohort"))


def scratch_differences(entry, scratch, seed):
    """``entry["difference"][view][protocol][budget label]`` for every cell ``entry`` was evaluated in: its macro
    AUROC minus that of the scratch row of its encoder, paired on the same test studies and resamples, with its
    95 % interval and p-value (``kmedssl.eval.paired_difference``; the per-label differences are left out)."""
    entry["difference"] = {}
    for protocol, per_budget in entry["scores"].items():
        for label, path in per_budget.items():
            names, ours = read_scores(path)
            _, theirs = read_scores(scratch["scores"][protocol][label])
            for view, scores in ours.items():
                a, b = scores["encoder"], theirs[view]["encoder"]
                if not np.array_equal(a.groups, b.groups):
                    raise ValueError(f"Expected {entry['method']} and {scratch['method']} to be scored on the same "
                                     f"test studies. Received: different {view} test sets")
                difference = paired_difference(a.labels, a.scores, b.scores, a.groups, names, seed=seed).to_dict()
                difference.pop("per_label", None)
                entry["difference"].setdefault(view, {}).setdefault(protocol, {})[label] = difference


def judged_cells(cells):
    """The cells the verdict judges: the frontal ones (fine-tuning at 10 %, the linear probe)."""
    return [cell for cell in cells if cell[0] == "frontal"]


def verdict_header(cells):
    """E.g. ``"above scratch (CI > 0; frontal: linear 10%, 100%; finetune 10%)"``."""
    budgets = {}
    for _, protocol, budget in judged_cells(cells):
        budgets.setdefault(protocol, []).append(budget_label(budget))
    judged = "; ".join(f"{protocol} {', '.join(labels)}" for protocol, labels in budgets.items())
    return f"above scratch (CI > 0; frontal: {judged or 'none'})"


def above_scratch(entry, cells):
    """``"yes: 3/3 cells with the paired 95 % CI above 0"`` when the paired difference with scratch has
    ``low > 0`` in every judged cell (``judged_cells``), else ``"no: k/3 ..."``; empty for a scratch row."""
    judged = judged_cells(cells)
    if entry["kind"] == "scratch" or not judged:
        return ""
    above = sum((entry["difference"][v][p][budget_label(b)]["low"] or 0) > 0 for v, p, b in judged)
    return f"{'yes' if above == len(judged) else 'no'}: {above}/{len(judged)} cells with the paired 95 % CI above 0"


CSV_COLUMNS = ("method", "encoder", "view", "protocol", "labels", "macro_auroc", "low", "high", "n_test_studies",
               "baseline", "difference", "difference_low", "difference_high", "p_value")


def csv_lines(rows, cells, scratch):
    """One line per encoder and cell: the macro AUROC with its 95 % interval and, for a pretrained encoder, the
    paired difference with the scratch row of its encoder."""
    lines = []
    for row in rows:
        for view, protocol, budget in cells:
            label = budget_label(budget)
            ci = row["auroc_ci"][view][protocol][label]
            line = {"method": row["method"], "encoder": row["encoder"], "view": view, "protocol": protocol,
                    "labels": label, "macro_auroc": ci["estimate"], "low": ci["low"], "high": ci["high"],
                    "n_test_studies": row["n_test_studies"][view]}
            if row["kind"] != "scratch":
                d = row["difference"][view][protocol][label]
                line.update(baseline=scratch[row["encoder"]]["method"], difference=d["estimate"],
                            difference_low=d["low"], difference_high=d["high"], p_value=d["p_value"])
            lines.append([_csv_value(line.get(c)) for c in CSV_COLUMNS])
    return lines


def _csv_value(value):
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def write_table(directory, rows, columns, cells, summary, differences, csv_rows, verdict_header):
    """``phantom_benchmark.md`` (macro AUROC [95 % CI] per cell and the verdict ``row["above_scratch"]`` under
    ``verdict_header``, then the paired differences with scratch), ``.csv`` (``csv_rows``, one line per cell,
    ``CSV_COLUMNS``); returns the Markdown text.

    ``cells[i][column]`` and ``differences[i][column]`` are interval dicts (``Interval.to_dict()``); a row
    without differences (scratch) is left out of the second table."""
    header = ["method", "encoder", *columns, verdict_header]
    table = [[row["method"], row["encoder"], *(format_interval(cells[i][c]) for c in columns), row["above_scratch"]]
             for i, row in enumerate(rows)]
    lines = ["# Phantom benchmark: macro AUROC [95 % CI] (rows: encoders; columns: view, protocol, label budget)",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
             *("| " + " | ".join(line) + " |" for line in table)]
    if any(differences):
        lines += ["", "## Paired difference with scratch (the same encoder, randomly initialised, same protocol)", "",
                  "Macro AUROC of the row minus that of its encoder's scratch row on the same test studies: "
                  "estimate [95 % CI], two-sided bootstrap p-value.", "",
                  "| method | encoder | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 2)]
        lines += ["| " + " | ".join([row["method"], row["encoder"],
                                     *(format_interval(differences[i][c]) for c in columns)]) + " |"
                  for i, row in enumerate(rows) if differences[i]]
    lines += ["", summary]
    markdown = "\n".join(lines) + "\n"
    (directory / "phantom_benchmark.md").write_text(markdown)
    with open(directory / "phantom_benchmark.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(csv_rows)
    return markdown


def plot_figures(directory, rows, plan):
    """``auroc_vs_budget_<protocol>_<view>.png`` per protocol and view of ``plan``: macro AUROC vs label budget
    with 95 % intervals, one line per encoder."""
    paths = []
    for protocol, (budgets, views) in plan.items():
        for view in views:
            results = {row["method"]: {b: row["auroc"][view][protocol][budget_label(b)] for b in budgets}
                       for row in rows}
            intervals = {row["method"]: {b: (row["auroc_ci"][view][protocol][budget_label(b)]["low"],
                                             row["auroc_ci"][view][protocol][budget_label(b)]["high"])
                                         for b in budgets} for row in rows}
            path = directory / f"auroc_vs_budget_{protocol}_{view}.png"
            paths.append(str(plot_auroc_vs_budget(results, path, title=f"Phantom: {protocol}, {view} view",
                                                  intervals=intervals)))
    return paths


def check_arguments(methods, budget_minutes, protocols):
    bad = [m for m in methods if m not in SSL_METHODS]
    if bad or not methods:
        raise ValueError(f"Expected methods from {SSL_METHODS}. Received: {methods}")
    if budget_minutes <= 0:
        raise ValueError(f"Expected budget_minutes > 0. Received: {budget_minutes}")
    if not protocols or any(p not in PROTOCOLS for p in protocols):
        raise ValueError(f"Expected protocols from {PROTOCOLS}. Received: {protocols}")


def plan_text(plan):
    """E.g. ``"linear at 10%, 100% (frontal, lateral, ensemble); finetune at 10% (frontal)"``."""
    return "; ".join(f"{protocol} at {', '.join(map(budget_label, budgets))} ({', '.join(views)})"
                     for protocol, (budgets, views) in plan.items())


def phantom_benchmark(methods=None, budget_minutes=5.0, linear_budgets=None, finetune_budgets=None,
                      finetune_views=DEFAULT_FINETUNE_VIEWS, protocols=PROTOCOLS, output_dir=None, seed=0,
                      data_seed=0, quick=False, overwrite=False, log=print, progress=None, test_size=None):
    """Pretrain every SSL method with the same CPU budget, evaluate it against scratch and supervised.

    Each protocol has its own cells (label budget x view), because fine-tuning costs ~100x a linear probe
    (ViT phantom/4 at 100 % labels: ~366 s of one core): by default the linear probe at 10 % and 100 % labels
    on the frontal, lateral and ensemble views, fine-tuning at 10 % labels on the frontal view only (the cells
    the recipes are judged on), sized for the benchmark's 60 minutes on 2 CPU cores.

    Args:
        methods: SSL methods (default: all of ``SSL_METHODS``; ``quick``: ``("mvcon", "mvmae")``).
        budget_minutes: wall-clock minutes of optimisation steps per method (supervised included),
            converted to epochs and steps per epoch by timing steps first (see the module docstring).
        linear_budgets: label budgets of the linear probe, on every view (fractions or counts of training
            studies; default ``(0.1, 1.0)``; ``quick``: ``(0.2,)``).
        finetune_budgets: label budgets of fine-tuning (default ``(0.1,)``; ``quick``: ``(0.2,)``).
        finetune_views: the views fine-tuned (default ``("frontal",)``; ``"ensemble"`` fine-tunes both image
            views).
        protocols: any of ``("linear", "finetune")``.
        output_dir: where runs, reports, table and figures go (default ``runs/phantom-benchmark-<time>``).
        seed: seed of pretraining, scratch weights, label budgets and probes.
        data_seed: seed of the phantom cohort every method pretrains on (and the probes train on); the
            test cohort is the same for every ``data_seed``.
        quick: a tiny run (the methods above, 1 epoch of 2 steps of batch 8, a 100-subject chest cohort,
            the quick label budgets above, fine-tuning for 1 epoch of the encoder family's phantom recipe, a
            100-study test cohort; no step timing) to check the whole pipeline.
        overwrite: replace a non-empty ``output_dir`` that is a benchmark output (``BENCHMARK_LAYOUT``).
        log: called with each progress line (every pretraining epoch's metrics too) and the final table.
        progress: None or ``progress(done, total, what)`` (as ``evaluate``'s), called as each pretraining or
            ``evaluate`` call starts and with every ``evaluate`` step; ``total`` counts units of about a
            minute (a pretraining weighs its budget in minutes, an ``evaluate`` call 1).
        test_size: studies of the phantom test cohort every encoder is scored on (default 2,000; ``quick``: 100).

    Returns:
        The dict written to ``phantom_benchmark.json``: ``config`` (with ``evaluations``, the label budgets and
        views of each protocol), ``columns`` (one per cell), ``rows`` (per encoder: its AUROCs by view, protocol
        and budget (``auroc``), with their intervals (``auroc_ci``), for a pretrained encoder the paired
        differences with its scratch row (``difference``) and the verdict ``above_scratch``, its pretraining
        schedule and seconds), ``figures`` and ``timings``.
    """
    start = time.perf_counter()
    methods = tuple(methods or (QUICK["methods"] if quick else SSL_METHODS))
    protocols = tuple(protocols)
    if linear_budgets is None:
        linear_budgets = QUICK["label_budgets"] if quick else DEFAULT_LINEAR_BUDGETS
    if finetune_budgets is None:
        finetune_budgets = QUICK["label_budgets"] if quick else DEFAULT_FINETUNE_BUDGETS
    check_arguments(methods, budget_minutes, protocols)
    plan = evaluation_plan(protocols, linear_budgets, finetune_budgets, finetune_views)
    cells = plan_cells(plan)
    subjects = QUICK["subjects"] if quick else EVAL_SUBJECTS
    test_size = test_size or (QUICK["test_size"] if quick else TEST_COHORT_STUDIES)
    directory = runs.prepare_run_dir(output_dir or runs.default_run_dir("phantom-benchmark"), overwrite=overwrite,
                                     layout=BENCHMARK_LAYOUT)
    runs.atomic_write(directory / BENCHMARK_LAYOUT.marker, f"{BENCHMARK_HEADER}: overwrite may replace this folder\n")
    budget_seconds = 60.0 * budget_minutes
    log(f"Phantom benchmark on {keras.backend.backend()} ({device_description()}): "
        + ("quick run" if quick else f"{budget_minutes:g} min of optimisation steps per method")
        + f"; methods {', '.join(methods)} + supervised + scratch; evaluations: {plan_text(plan)}; output {directory}")

    pretrained = (*methods, "supervised")
    encoders = {encoder_name(make_recipe(name, **method_overrides(name, quick, subjects, data_seed)))
                for name in pretrained}
    pretrain_weight = 1 if quick else max(1, round(budget_minutes))
    evaluations = sum(len(budgets) for budgets, _ in plan.values())
    step = BenchmarkProgress(progress, len(pretrained) * pretrain_weight
                             + (len(pretrained) + len(encoders)) * evaluations)
    rows, scratch_recipes = [], {}
    for name in pretrained:
        step.start(f"[{name}] pretraining", pretrain_weight)
        entry, recipe = pretrain_row(name, budget_seconds, quick, subjects, seed, directory / "pretrain", log,
                                     data_seed)
        rows.append(entry)
        scratch_recipes.setdefault(entry["encoder"], recipe)
    scratch = {key: scratch_row(recipe, seed, directory / "pretrain") for key, recipe in scratch_recipes.items()}
    rows = [*scratch.values(), rows[-1], *rows[:-1]]  # scratch, supervised, then the SSL methods
    for entry in rows:
        evaluate_row(entry, plan, seed, directory / "evaluations", step, quick=quick, test_size=test_size)
        log(f"[{entry['method']}] evaluated in {entry['evaluate_seconds']:.0f} s")
    step.finish()
    for entry in rows:
        if entry["kind"] != "scratch":
            scratch_differences(entry, scratch[entry["encoder"]], seed)
        entry["above_scratch"] = above_scratch(entry, cells)

    columns = [column_name(*cell) for cell in cells]
    intervals = [{column_name(v, p, b): row["auroc_ci"][v][p][budget_label(b)] for v, p, b in cells} for row in rows]
    differences = [{column_name(v, p, b): row["difference"][v][p][budget_label(b)] for v, p, b in cells}
                   if "difference" in row else None for row in rows]
    figures = plot_figures(directory, rows, plan)
    total = time.perf_counter() - start
    schedule = ", ".join(f"{r['method']} {r['epochs']}x{r['steps_per_epoch']} steps of {r['batch_size']} "
                         f"({r['pretrain_seconds']:.0f} s)" for r in rows if r["kind"] != "scratch")
    summary = (f"Backend {keras.backend.backend()}, {device_description()}; budget "
               + ("quick (1 epoch of 2 steps)" if quick else f"{budget_minutes:g} min of optimisation steps per "
                  f"method") + f"; seed {seed}, phantom cohort seed {data_seed}; pretraining (epochs x steps per epoch): {schedule}. Evaluations: {plan_text(plan)}"
               + (" (fine-tuning for 1 epoch)" if quick and "finetune" in plan else "")
               + f". Test set: the phantom test cohort ({test_size} studies, never seen in pretraining or probe "
               f"training); test studies per view: "
               + ", ".join(f"{v} {n}" for v, n in rows[0]["n_test_studies"].items()) + ". Intervals: 95 %, "
               f"bootstrap over test studies ({N_RESAMPLES} resamples, seed {seed}). Total {total / 60:.1f} min.")
    markdown = write_table(directory, rows, columns, intervals, summary, differences, csv_lines(rows, cells, scratch),
                           verdict_header(cells))
    result = {
        "config": {"methods": list(methods), "budget_minutes": budget_minutes, "protocols": list(protocols),
                   "evaluations": {p: {"label_budgets": list(budgets), "views": list(views)}
                                   for p, (budgets, views) in plan.items()},
                   "seed": seed, "data_seed": data_seed, "quick": quick, "backend": keras.backend.backend(), "device": device_description(),
                   "eval_subjects": subjects, "test_size": test_size, "test_cohort": rows[0].get("test_cohort")},
        "columns": columns,
        "rows": rows,
        "figures": figures,
        "timings": {"total_seconds": total,
                    "pretrain_seconds": {r["method"]: r.get("pretrain_seconds", 0.0) for r in rows},
                    "timing_seconds": {r["method"]: r.get("timing_seconds", 0.0) for r in rows},
                    "evaluate_seconds": {r["method"]: r["evaluate_seconds"] for r in rows}},
    }
    (directory / "phantom_benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    log(markdown)
    return result
