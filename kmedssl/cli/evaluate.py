"""``kmedssl evaluate``: linear-probe or fine-tune a pretrained encoder and print macro AUROCs with their 95 %
intervals and paired differences with a baseline (SPEC §5, §7); or, with ``--task``, the dense evaluations
(segmentation Dice, landmark error, zero-shot correspondence); progress on stderr."""

import time

import click

from kmedssl.cli.common import BACKENDS, run_user_command, use_backend
from kmedssl.data.formats import FORMATS  # keras-free: the backend is chosen later

TASKS = ("classification", "segmentation", "landmarks", "correspondence")
CLASSIFICATION_TEST_SIZE = 2000  # kmedssl.data.test_cohort.TEST_COHORT_STUDIES (keras-free here)
DENSE_TEST_SIZE = 50  # kmedssl.eval.dense_tasks.DENSE_TEST_SUBJECTS


@click.command()
@click.argument("source", metavar="RUN_DIR|ENCODER.keras")
@click.option("--task", type=click.Choice(TASKS), default="classification", show_default=True,
              help="classification: pathology labels (AUROC); segmentation: UperNet fine-tuning (Dice); landmarks: "
                   "heatmap fine-tuning (error in pixels); correspondence: zero-shot landmark matching between test "
                   "images of different subjects (error in pixels).")
@click.option("--data", default="phantom", show_default=True,
              help="'phantom' or a data path (dense tasks: siim, jsrt, chestx-det or masks layout).")
@click.option("--format", "data_format", type=click.Choice(FORMATS), help="Format of --data PATH (inferred if omitted).")
@click.option("--protocol", default="linear", show_default=True,
              help="linear: frozen features + logistic regression; finetune: the encoder family's fine-tuning recipe "
                   "(--finetune-recipe); a comma list (linear,finetune) evaluates each and, with --baseline, ends "
                   "with one verdict line.")
@click.option("--finetune-recipe", type=click.Choice(["phantom", "paper"]),
              help="With --protocol finetune: the papers' recipe (ViT: Medical MAE; ResNet: paper 001 Table 3) or "
                   "its phantom scale (default: phantom on --data phantom, paper on a path; docs/evaluation.md).")
@click.option("--labels", help="Label budget: a number of studies (e.g. 200) or a fraction (e.g. 0.1); a comma list "
                               "(e.g. 50,100,all) evaluates each and draws reports/auroc_vs_budget.png.")
@click.option("--views", default="frontal,lateral,ensemble", show_default=True, help="Comma-separated views.")
@click.option("--baseline", metavar="random|scratch|imagenet:PATH|init:PATH",
              help="Also evaluate a baseline copy of the encoder and report the paired difference: random = frozen "
                   "random init (linear probe), scratch = random init trained with the same --protocol; "
                   "imagenet:PATH / init:PATH = initialised from a weights file (ImageNet normalisation folded in, "
                   "or as it is) and trained with the same --protocol.")
@click.option("--test-size", type=click.IntRange(min=1),
              help="--data phantom: studies of the phantom's own test cohort (classification, default 2000; rendered "
                   "once, then cached), or subjects of the dense test cohort (dense tasks, default 50).")
@click.option("--structures", help="Dense segmentation targets, a comma list (default: heart, lungs, clavicles and "
                                   "pneumothorax_visible where the data has them, else all its masks).")
@click.option("--epochs", type=click.IntRange(min=1), help="Fine-tuning epochs of a dense task (default 30).")
@click.option("--test-data", help="Cross-source: fit on --data's training split, score on this data's test split.")
@click.option("--test-format", type=click.Choice(FORMATS), help="Format of --test-data PATH (inferred if omitted).")
@click.option("--cv", help="Repeated k-fold on the training split, FOLDSxREPEATS (paper 001: 5x10).")
@click.option("--compare", help="With --cv: another RUN_DIR|ENCODER.keras (or 'random'), Wilcoxon-tested.")
@click.option("--property-probes", is_flag=True,
              help="Also run ACE's property probes (compositionality, decompositionality, retrieval; paper 004).")
@click.option("--backend", type=click.Choice(BACKENDS), help="Keras backend (default: $KERAS_BACKEND or torch).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fit-seed", type=int, help="Seed of the probe and fine-tuning runs alone (default: --seed); the "
                                           "labelled studies, baseline weights and bootstrap keep --seed.")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def evaluate(source, task, data, data_format, protocol, finetune_recipe, labels, views, baseline, test_size, structures,
             epochs, test_data, test_format, cv, compare, property_probes, backend, seed, fit_seed, debug):
    """Linear-probe (or fine-tune) a pretrained encoder on chest pathology labels and print macro AUROCs; or
    with --task, fine-tune it for segmentation or landmarks, or match landmarks zero-shot.

    Every AUROC is printed with its 95 % interval (bootstrap over test studies) and, with --baseline, the
    paired difference pretrained - baseline with its interval and p-value. Reports (JSON, Markdown, figures)
    go to the run's reports/ folder. Dense tasks print the mean Dice (or error in pixels) per label budget,
    the scratch baseline's and the paired difference, then each structure (landmark).

    \b
    Examples:
      kmedssl evaluate runs/spcl --baseline random --labels 0.1
      kmedssl evaluate runs/spcl --protocol finetune --baseline scratch --labels 0.01,0.1,1.0
      kmedssl evaluate runs/spcl --protocol finetune,linear --baseline scratch --labels 0.1 --views frontal
      kmedssl evaluate runs/spcl --protocol finetune --baseline scratch --labels 0.1 --fit-seed 1
      kmedssl evaluate runs/spcl --labels 0.01,0.1,1.0
      kmedssl evaluate runs/spcl --data /data/mimic-cxr-jpg --test-data /data/chexpert
      kmedssl evaluate runs/spcl --cv 5x10 --compare runs/simclr
      kmedssl evaluate runs/ace --baseline random --property-probes
      kmedssl evaluate runs/spcl --task segmentation --baseline scratch --labels 0.1,1.0
      kmedssl evaluate runs/spcl --task segmentation --data /data/jsrt --labels 2,5,10 --structures heart,lung_left
      kmedssl evaluate runs/ace --task landmarks --data /data/phantom-masks --baseline scratch
      kmedssl evaluate runs/ace --task correspondence --baseline scratch
    """
    use_backend(backend)
    from kmedssl import recipes

    budget = None
    if labels is not None:
        try:
            parts = [p.strip() for p in labels.split(",")]
            budgets = [None if p == "all" else float(p) if "." in p else int(p) for p in parts]
        except ValueError:
            raise click.BadParameter(f"expected N, FRACTION or a comma list of them, received {labels!r}",
                                     param_hint="--labels") from None
        budget = budgets if "," in labels else budgets[0]
    folds = repeats = None
    if cv is not None:
        folds_text, sep, repeats_text = cv.lower().partition("x")
        if not (sep and folds_text.strip().isdigit() and repeats_text.strip().isdigit()):
            raise click.BadParameter(f"expected FOLDSxREPEATS such as 5x10, received {cv!r}", param_hint="--cv")
        folds, repeats = int(folds_text), int(repeats_text)
    if task != "classification":
        if fit_seed is not None:
            raise click.BadParameter("applies to --task classification", param_hint="--fit-seed")
        return evaluate_dense_task(source, task, data, data_format, budget, baseline, test_size, structures, epochs,
                                   seed, debug)
    protocols = [p.strip() for p in protocol.split(",") if p.strip()]
    if not protocols or any(p not in PROTOCOL_NAMES for p in protocols) or len(set(protocols)) < len(protocols):
        raise click.BadParameter(f"expected linear, finetune or a comma list of them, received {protocol!r}",
                                 param_hint="--protocol")
    reports = []
    for protocol in protocols:
        display = ProgressDisplay(PROTOCOL_NAMES[protocol])
        try:
            report = run_user_command(
                debug, recipes.evaluate, source, data=data, protocol=protocol, labels=budget,
                views=[v.strip() for v in views.split(",") if v.strip()], seed=seed, baseline=baseline,
                format=data_format, test_data=test_data, test_format=test_format, folds=folds, repeats=repeats,
                compare=compare, property_probes=property_probes,
                test_size=CLASSIFICATION_TEST_SIZE if test_size is None else test_size, progress=display,
                finetune_recipe=finetune_recipe, fit_seed=fit_seed,
            )
        finally:
            display.close()
        name = PROTOCOL_NAMES[protocol]
        if "cv" in report:
            result = report["cv"]
            click.echo(f"{name}, {result['repeats']} x {result['folds']}-fold cross-validation on {result['view']} "
                       f"images of {data}: mean (std) of the per-repeat macro AUROC")
            for entry in result["methods"]:
                click.echo(f"{entry['name']:<24} {entry['mean']:.4f} ({entry['std']:.4f})")
            if "wilcoxon" in result:
                click.echo(f"Wilcoxon signed-rank (two-sided, paired): p = {result['wilcoxon']['p_value']:.4g}")
            continue
        print_report(report, name, data, test_data, property_probes)
        reports.append((name, report))
    if baseline and reports:
        click.echo(verdict(reports))


PROTOCOL_NAMES = {"linear": "Linear probe", "finetune": "Fine-tuning"}
DENSE_NAMES = {"segmentation": "Segmentation", "landmarks": "Landmark detection",
               "correspondence": "Zero-shot correspondence"}


def evaluate_dense_task(source, task, data, data_format, budget, baseline, test_size, structures, epochs, seed, debug):
    """``--task segmentation|landmarks|correspondence``: run ``recipes.evaluate(task=...)`` and print its table."""
    from kmedssl import recipes

    if baseline not in (None, "scratch"):
        raise click.BadParameter(f"expected scratch with --task {task}, received {baseline!r}", param_hint="--baseline")
    names = None if structures is None else [s.strip() for s in structures.split(",") if s.strip()]
    display = ProgressDisplay(DENSE_NAMES[task])
    try:
        report = run_user_command(
            debug, recipes.evaluate, source, task=task, data=data, format=data_format, labels=budget,
            structures=names, baseline=baseline, seed=seed, epochs=epochs,
            test_size=DENSE_TEST_SIZE if test_size is None else test_size, progress=display)
    finally:
        display.close()
    print_dense_report(report)
    if baseline:
        click.echo(dense_verdict(report))


def print_dense_report(report):
    """One line per label budget: ``0.712 [0.688, 0.735]`` (mean Dice or error, 95 % interval), the scratch
    baseline's and the paired difference ``+0.031 [+0.012, +0.050], p = 0.002``; then one line per structure
    (landmark) at the last budget."""
    from kmedssl.eval.intervals import format_interval

    baseline, metric = report["baseline"], report["metric"]
    direction = "higher is better" if report["higher_is_better"] else "lower is better"
    click.echo(f"{DENSE_NAMES[report['task']]}, mean {metric} [95 % CI] ({direction}) over {len(report['items'])} "
               f"{'structures' if report['task'] == 'segmentation' else 'landmarks'}")
    pairs = f", {report['n_pairs']} pairs" if report.get("n_pairs") else ""
    click.echo(f"Test set: {report['n_test_images']} images{pairs} at {report['image_size']} px; "
               f"{report['data_description']}; intervals: bootstrap over test studies")
    columns = ["pretrained"] + ([baseline["name"], f"difference (pretrained - {baseline['name']})"] if baseline else [])

    def line(first, cells, width=10):
        return (f"{first:<{width}} " + "  ".join(f"{cell:<24}" for cell in cells)).rstrip()

    click.echo(f"{'labels':<10} {'images':<6}  " + "  ".join(f"{c:<24}" for c in columns).rstrip())
    for entry in report["budgets"]:
        cells = [str(entry["n_train_images"]), format_interval(entry["score_ci"])]
        if baseline:
            cells += [format_interval(entry["baseline"]["score_ci"]), format_interval(entry["difference"])]
        budget = "all" if entry["labels"] is None else format(entry["labels"], "g")
        click.echo(f"{budget:<10} {cells[0]:<6}  " + "  ".join(f"{c:<24}" for c in cells[1:]).rstrip())
    last = report["budgets"][-1]
    what = "structure" if report["task"] == "segmentation" else "landmark"
    width = max(len(what), *(len(name) for name in report["items"]))
    click.echo(f"Per {what} at labels {'all' if last['labels'] is None else format(last['labels'], 'g')}:")
    click.echo(line(what, columns, width))
    for name in report["items"]:
        cells = [format_interval(last["per_item_ci"][name])]
        if baseline:
            cells += [format_interval(last["baseline"]["per_item_ci"][name]),
                      format_interval(last["per_item_difference"][name])]
        click.echo(line(name, cells, width))


def dense_verdict(report):
    """One line: in how many label budgets the paired 95 % interval of pretrained - scratch is on the better
    side of 0 (above for Dice, below for an error)."""
    cells = [("all" if b["labels"] is None else format(b["labels"], "g"), b["difference"]) for b in report["budgets"]]
    higher = report["higher_is_better"]

    def is_better(d):
        return (d["low"] is not None and d["low"] > 0) if higher else (d["high"] is not None and d["high"] < 0)

    better = [what for what, d in cells if is_better(d)]
    side = "above" if higher else "below"
    if len(better) == len(cells):
        return (f"Verdict: the pretrained encoder beats the scratch baseline in {len(cells)} of {len(cells)} "
                f"label budgets (paired 95 % CI {side} 0).")
    return (f"Verdict: the pretrained encoder does not beat the scratch baseline everywhere: the paired 95 % CI is "
            f"{side} 0 in {len(better)} of {len(cells)} label budgets" + (f" ({', '.join(better)})" if better else "")
            + ".")


def verdict(reports):
    """One line: in how many of the printed comparisons (protocol x view, or x label budget) the paired 95 %
    interval of pretrained - baseline lies above 0."""
    cells = []
    for name, report in reports:
        if "budgets" in report:
            cells += [(f"{name.lower()} {'all' if b['labels'] is None else format(b['labels'], 'g')}",
                       b["baseline_difference"]) for b in report["budgets"]]
        else:
            cells += [(f"{name.lower()} {view}", entry["difference"])
                      for view, entry in report["baseline"]["views"].items()]
    above = [what for what, d in cells if d["low"] is not None and d["low"] > 0]
    baseline = reports[0][1]["baseline"]["name"]
    if len(above) == len(cells):
        return (f"Verdict: the pretrained encoder beats the {baseline} baseline in {len(cells)} of {len(cells)} "
                f"comparisons (paired 95 % CI above 0).")
    return (f"Verdict: the pretrained encoder does not beat the {baseline} baseline everywhere: the paired 95 % CI "
            f"is above 0 in {len(above)} of {len(cells)} comparisons" + (f" ({', '.join(above)})" if above else "")
            + ".")


def print_report(report, name, data, test_data, property_probes):
    """The evaluation as tables: every macro AUROC as ``0.712 [0.688, 0.735]`` (95 % interval), and with a
    baseline its AUROC and the paired difference ``+0.031 [+0.012, +0.050], p = 0.002``."""
    from kmedssl.eval.intervals import format_interval

    baseline = report.get("baseline")
    tested = f"{data} -> {test_data}" if test_data else data
    click.echo(f"{name}, macro AUROC [95 % CI] over {len(report['per_label_auroc'])} labels of {tested}")
    if "test_cohort" in report:
        cohort = report["test_cohort"]
        click.echo(f"Test set: the phantom test cohort, {cohort['n_studies']} studies ({cohort['n_images']} images) "
                   f"of subjects never seen in training; intervals: bootstrap over test studies, "
                   f"{report['macro_auroc_ci']['n_resamples']} resamples")
    columns = ["pretrained"] + ([baseline["name"], f"difference (pretrained - {baseline['name']})"] if baseline else [])

    def line(first, cells):
        return (f"{first:<10} " + "  ".join(f"{cell:<22}" for cell in cells)).rstrip()

    if "budgets" in report:
        click.echo(line("labels", columns))
        for entry in report["budgets"]:
            budget = "all" if entry["labels"] is None else format(entry["labels"], "g")
            cells = [format_interval(entry["macro_auroc_ci"])]
            if baseline:
                cells += [format_interval(entry["baseline_macro_auroc_ci"]),
                          format_interval(entry["baseline_difference"])]
            click.echo(line(budget, cells))
        click.echo(f"Views at the last budget ({report['budgets'][-1]['labels']}):")
    click.echo(line("view", columns))
    for view, entry in report["views"].items():
        cells = [format_interval(entry["macro_auroc_ci"])]
        if baseline:
            cells += [format_interval(baseline["views"][view]["macro_auroc_ci"]),
                      format_interval({k: v for k, v in baseline["views"][view]["difference"].items()
                                       if k != "per_label"})]
        click.echo(line(view, cells))
    if property_probes:
        click.echo("ACE property probes (frontal test images; chance = 1 / batch):")
        for role, entry in report["property_probes"].items():
            name = "pretrained" if role == "encoder" else baseline["name"]
            click.echo(f"{name:<12} compositionality cos {entry['compositionality_mean_cosine']['4']:.4f}, "
                       f"decompositionality acc {entry['decompositionality_accuracy']:.4f}, "
                       f"retrieval acc {entry['retrieval_accuracy']:.4f} (chance {entry['chance']:.4f})")


class ProgressDisplay:
    """``evaluate``'s ``progress(done, total, what)`` on stderr: a click progress bar with the running step and
    the time left on a terminal, else one line per step (``[3/29 0:12] what``) for logs."""

    def __init__(self, label):
        self.label, self.bar, self.start = label, None, time.monotonic()
        self.stream = click.get_text_stream("stderr")
        self.terminal = self.stream.isatty()

    def __call__(self, done, total, what):
        if not self.terminal:
            elapsed = int(time.monotonic() - self.start)
            click.echo(f"[{done}/{total} {elapsed // 60}:{elapsed % 60:02d}] {what}", err=True)
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=self.stream, show_eta=True,
                                         show_pos=True, item_show_func=lambda item: item and item[:70])
            self.bar.__enter__()
        if done > self.bar.pos:
            self.bar.update(done - self.bar.pos, current_item=what)
        else:
            self.bar.current_item = what
            self.bar.render_progress()
        if done >= total:
            self.close()

    def close(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
