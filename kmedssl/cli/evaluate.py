"""``kmedssl evaluate``: linear-probe or fine-tune a pretrained encoder and print macro AUROCs (SPEC §7)."""

import click

from kmedssl.cli.common import BACKENDS, run_user_command, use_backend
from kmedssl.data.formats import FORMATS  # keras-free: the backend is chosen later


@click.command()
@click.argument("source", metavar="RUN_DIR|ENCODER.keras")
@click.option("--data", default="phantom", show_default=True, help="'phantom' or a labelled chest X-ray data path.")
@click.option("--format", "data_format", type=click.Choice(FORMATS), help="Format of --data PATH (inferred if omitted).")
@click.option("--protocol", type=click.Choice(["linear", "finetune"]), default="linear", show_default=True,
              help="linear: frozen features + logistic regression; finetune: paper 001 Table 3 fine-tuning.")
@click.option("--labels", help="Label budget: a number of studies (e.g. 200) or a fraction (e.g. 0.1); a comma list "
                               "(e.g. 50,100,all) evaluates each and draws reports/auroc_vs_budget.png.")
@click.option("--views", default="frontal,lateral,ensemble", show_default=True, help="Comma-separated views.")
@click.option("--baseline", type=click.Choice(["random"]), help="Also probe a randomly initialised copy.")
@click.option("--test-data", help="Cross-source: fit on --data's training split, score on this data's test split.")
@click.option("--test-format", type=click.Choice(FORMATS), help="Format of --test-data PATH (inferred if omitted).")
@click.option("--cv", help="Repeated k-fold on the training split, FOLDSxREPEATS (paper 001: 5x10).")
@click.option("--compare", help="With --cv: another RUN_DIR|ENCODER.keras (or 'random'), Wilcoxon-tested.")
@click.option("--property-probes", is_flag=True,
              help="Also run ACE's property probes (compositionality, decompositionality, retrieval; paper 004).")
@click.option("--backend", type=click.Choice(BACKENDS), help="Keras backend (default: $KERAS_BACKEND or torch).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def evaluate(source, data, data_format, protocol, labels, views, baseline, test_data, test_format, cv, compare,
             property_probes, backend, seed, debug):
    """Linear-probe (or fine-tune) a pretrained encoder on chest pathology labels and print macro AUROCs.

    \b
    Examples:
      kmedssl evaluate runs/spcl --baseline random --labels 0.1
      kmedssl evaluate runs/spcl --labels 0.01,0.1,1.0
      kmedssl evaluate runs/spcl --data /data/mimic-cxr-jpg --test-data /data/chexpert
      kmedssl evaluate runs/spcl --cv 5x10 --compare runs/simclr
      kmedssl evaluate runs/ace --baseline random --property-probes
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
    report = run_user_command(
        debug, recipes.evaluate, source, data=data, protocol=protocol, labels=budget,
        views=[v.strip() for v in views.split(",") if v.strip()], seed=seed, baseline=baseline, format=data_format,
        test_data=test_data, test_format=test_format, folds=folds, repeats=repeats, compare=compare,
        property_probes=property_probes,
    )
    name = "Linear probe" if protocol == "linear" else "Fine-tuning"
    if "cv" in report:
        result = report["cv"]
        click.echo(f"{name}, {result['repeats']} x {result['folds']}-fold cross-validation on {result['view']} "
                   f"images of {data}: mean (std) of the per-repeat macro AUROC")
        for entry in result["methods"]:
            click.echo(f"{entry['name']:<24} {entry['mean']:.4f} ({entry['std']:.4f})")
        if "wilcoxon" in result:
            click.echo(f"Wilcoxon signed-rank (two-sided, paired): p = {result['wilcoxon']['p_value']:.4g}")
        return
    tested = f"{data} -> {test_data}" if test_data else data
    click.echo(f"{name}, macro AUROC over {len(report['per_label_auroc'])} labels of {tested}")
    if "budgets" in report:
        click.echo(f"{'labels':<10} {'pretrained':>11}" + (f" {'random init':>12}" if baseline else ""))
        for entry in report["budgets"]:
            budget = "all" if entry["labels"] is None else format(entry["labels"], "g")
            line = f"{budget:<10} {entry['macro_auroc']:>11.4f}"
            if baseline:
                line += f" {entry['baseline_macro_auroc']:>12.4f}"
            click.echo(line)
        click.echo(f"Views at the last budget ({report['budgets'][-1]['labels']}):")
    header = f"{'view':<10} {'pretrained':>11}" + (f" {'random init':>12}" if baseline else "")
    click.echo(header)
    for view, entry in report["views"].items():
        line = f"{view:<10} {entry['macro_auroc']:>11.4f}"
        if baseline:
            line += f" {report['baseline']['views'][view]['macro_auroc']:>12.4f}"
        click.echo(line)
    if property_probes:
        click.echo("ACE property probes (frontal test images; chance = 1 / batch):")
        for role, entry in report["property_probes"].items():
            name = "pretrained" if role == "encoder" else "random init"
            click.echo(f"{name:<12} compositionality cos {entry['compositionality_mean_cosine']['4']:.4f}, "
                       f"decompositionality acc {entry['decompositionality_accuracy']:.4f}, "
                       f"retrieval acc {entry['retrieval_accuracy']:.4f} (chance {entry['chance']:.4f})")
