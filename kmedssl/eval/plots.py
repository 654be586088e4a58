"""Report figures as PNG: ROC curves, AUROC vs label budget (paper 000 Fig. 3) and 2-D embeddings of
encoder features (t-SNE, or UMAP when installed; papers 001 Fig. 2, 003 Fig. 3).

Figures are drawn with Matplotlib's object-oriented API on an Agg canvas (no pyplot, no global backend
switch, no display needed); Matplotlib is imported only when a figure is drawn.
"""

import pathlib

import numpy as np

DPI = 120
EMBEDDING_METHODS = ("tsne", "umap")


def _figure(figsize):
    """A Matplotlib figure on an Agg canvas and its single axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot(1, 1, 1)


def _save(figure, path):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def _colors(count):
    """``count`` distinct colours: tab10 up to 10, tab20 up to 20, then evenly spaced on turbo."""
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, count)]


def plot_roc_curves(labels, scores, label_names, path, title, intervals=None):
    """One ROC curve per label (AUROC in the legend) and the chance diagonal, written to ``path`` (PNG).

    Labels with a single class in ``labels`` have no ROC curve; the legend lists them as "n/a".

    Args:
        labels: (N, K) 0/1 ground truth. scores: (N, K) predicted scores. label_names: K names.
        path: output PNG file. title: figure title.
        intervals: optional ``{label name: (low, high)}``, e.g. the 95 % bootstrap interval of each label's
            AUROC, written in the legend as ``0.712 [0.688, 0.735]``.

    Returns:
        ``path`` as a ``pathlib.Path``.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.ndim != 2 or labels.shape != scores.shape or labels.shape[1] != len(label_names):
        raise ValueError(
            f"Expected labels and scores of the same shape (N, K) with K = len(label_names) = {len(label_names)}. "
            f"Received: {labels.shape}, {scores.shape}"
        )
    figure, axes = _figure((6.4, 6.0))
    axes.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance (0.500)")
    for k, (name, color) in enumerate(zip(label_names, _colors(len(label_names)))):
        column = labels[:, k]
        if 0 < column.sum() < len(column):
            fpr, tpr, _ = roc_curve(column, scores[:, k])
            bounds = _bounds((intervals or {}).get(name))
            span = f" [{bounds[0]:.3f}, {bounds[1]:.3f}]" if bounds else ""
            axes.plot(fpr, tpr, color=color, linewidth=1.6,
                      label=f"{name} ({roc_auc_score(column, scores[:, k]):.3f}{span})")
        else:
            axes.plot([], [], color=color, label=f"{name} (n/a: one class)")
    axes.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate", title=title)
    axes.set_aspect("equal")
    axes.grid(alpha=0.3)
    axes.legend(title="label (AUROC" + (" [95 % CI]" if intervals else "") + ")", fontsize="small",
                loc="center left", bbox_to_anchor=(1.02, 0.5))
    return _save(figure, path)


def _budget_ticks(budgets):
    """Tick labels: fractions (all <= 1) as percentages, counts as integers with thousands as K."""
    if all(b <= 1 for b in budgets):
        return [f"{100 * b:g}%" for b in budgets]
    return [f"{b / 1000:g}K" if b >= 1000 else f"{b:g}" for b in budgets]


def plot_auroc_vs_budget(results, path, title, intervals=None, interval_name="95 % CI"):
    """Macro AUROC against the label budget, one line with markers per method (paper 000 Fig. 3).

    The x axis is logarithmic when the budgets span a factor of 10 or more (counts such as 5K ... 102K,
    or fractions such as 1 %, 10 %, 100 %), linear otherwise; ticks sit at the budgets. With
    ``intervals``, every point gets an error bar from its interval's low to high bound and the band
    between the bounds is shaded in the method's colour (the y label names ``interval_name``).

    Args:
        results: ``{method: {budget: auroc}}``; a budget is a count of labelled studies or a fraction
            (<= 1) of them; NaN AUROCs leave a gap.
        path: output PNG file. title: figure title.
        intervals: optional ``{method: {budget: (low, high)}}`` (e.g. 95 % bootstrap intervals); methods
            or budgets without one (or with NaN / None bounds) are drawn without a bar.
        interval_name: what the bars are, for the y label.

    Returns:
        ``path`` as a ``pathlib.Path``.
    """
    if not results or not all(isinstance(curve, dict) and curve for curve in results.values()):
        raise ValueError(f"Expected {{method: {{budget: auroc}}}} with at least one budget per method. "
                         f"Received: {results!r}")
    try:
        curves = {method: sorted((float(b), float(a)) for b, a in curve.items()) for method, curve in results.items()}
        bounds = {method: {float(b): _bounds(v) for b, v in curve.items()}
                  for method, curve in (intervals or {}).items()}
    except (TypeError, ValueError) as error:
        raise ValueError(f"Expected numeric budgets (counts or fractions; pass the count for 'all'), AUROCs and "
                         f"(low, high) intervals. Received: {results!r}, intervals={intervals!r}") from error
    unknown = set(bounds) - set(curves)
    if unknown:
        raise ValueError(f"Expected intervals for methods of results. Received: intervals for {sorted(unknown)}")
    budgets = sorted({b for curve in curves.values() for b, _ in curve})
    if budgets[0] <= 0:
        raise ValueError(f"Expected positive label budgets. Received: {budgets}")
    from matplotlib.transforms import ScaledTranslation

    figure, axes = _figure((6.4, 4.4))
    styles = zip(curves.items(), _colors(len(curves)), "osD^v<>ph*" * len(curves))
    for index, ((method, curve), color, marker) in enumerate(styles):
        xs, ys = zip(*curve)
        # With intervals, each method's points and bars are shifted sideways a little so that bars don't overlap.
        shift = 0.05 * (index - (len(curves) - 1) / 2) if bounds else 0.0  # inches
        transform = axes.transData + ScaledTranslation(shift, 0, figure.dpi_scale_trans)
        axes.plot(xs, ys, marker=marker, color=color, linewidth=1.8, markersize=6, label=method, transform=transform)
        axes.update_datalim(np.column_stack([xs, ys]))  # a shifted transform does not extend the data limits
        known = [(x, y, *bounds[method][x]) for x, y in curve if bounds.get(method, {}).get(x) is not None]
        if known:
            kx, ky, low, high = (np.asarray(v) for v in zip(*known))
            axes.errorbar(kx, ky, yerr=[np.maximum(ky - low, 0), np.maximum(high - ky, 0)], fmt="none",
                          ecolor=color, elinewidth=1.2, capsize=4, transform=transform)
            axes.fill_between(kx, low, high, color=color, alpha=0.12, linewidth=0)
    axes.autoscale_view()
    if budgets[-1] / budgets[0] >= 10:
        axes.set_xscale("log")
        axes.minorticks_off()
    axes.set_xticks(budgets, _budget_ticks(budgets))
    fractions = budgets[-1] <= 1
    axes.set(xlabel="Labelled training studies" + (" (fraction)" if fractions else ""),
             ylabel="Macro AUROC" + (f" (bars: {interval_name})" if bounds else ""), title=title)
    axes.grid(alpha=0.3)
    axes.legend(title="method", fontsize="small", loc="best")
    return _save(figure, path)


def _bounds(value):
    """``(low, high)`` floats, or None when missing or not finite."""
    if value is None:
        return None
    low, high = value
    if low is None or high is None or not (np.isfinite(float(low)) and np.isfinite(float(high))):
        return None
    return float(low), float(high)


def _embed_2d(features, method, seed):
    """``(N, D) -> (N, 2)`` t-SNE (scikit-learn) or UMAP (``umap-learn``) coordinates."""
    if method == "umap":
        try:
            import umap
        except ImportError as error:
            raise ValueError("Expected the `umap` package for method='umap'. Received: it is not installed; "
                             "`pip install umap-learn`, or use method='tsne'") from error
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(features)
    from sklearn.manifold import TSNE

    perplexity = min(30.0, (len(features) - 1) / 3)  # scikit-learn needs perplexity < N
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def plot_embedding(features, colors, path, title, method="tsne", seed=0):
    """2-D embedding of encoder features, points coloured by a category (metadata or label).

    Args:
        features: (N, D) features, N >= 4. colors: N category names (e.g. ``"MR knee"``, ``"effusion"``);
            one colour and legend entry per distinct name.
        path: output PNG file. title: figure title.
        method: ``"tsne"`` (scikit-learn, perplexity ``min(30, (N - 1) / 3)``, PCA init) or ``"umap"``
            (needs ``umap-learn``).
        seed: seed of the embedding.

    Returns:
        ``path`` as a ``pathlib.Path``.
    """
    features = np.asarray(features, "float64")
    if method not in EMBEDDING_METHODS:
        raise ValueError(f"Expected method in {EMBEDDING_METHODS}. Received: method={method!r}")
    if features.ndim != 2 or len(features) < 4 or len(colors) != len(features):
        raise ValueError(
            f"Expected (N, D) features with N >= 4 and N category names. Received: features.shape="
            f"{features.shape}, {len(colors)} names"
        )
    coordinates = _embed_2d(features, method, seed)  # (N, 2)
    categories = sorted({str(c) for c in colors})
    names = np.asarray([str(c) for c in colors])
    figure, axes = _figure((6.4, 5.6))
    size = float(np.clip(6000 / len(features), 8, 30))  # marker area: smaller for many points
    for category, color in zip(categories, _colors(len(categories))):
        chosen = names == category
        axes.scatter(coordinates[chosen, 0], coordinates[chosen, 1], s=size, color=color, alpha=0.8,
                     linewidths=0, label=f"{category} ({int(chosen.sum())})")
    label = "t-SNE" if method == "tsne" else "UMAP"
    axes.set(xlabel=f"{label} 1", ylabel=f"{label} 2", title=title)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(title="category (n)", fontsize="small", markerscale=max(1.0, 40 / size) ** 0.5,
                loc="center left", bbox_to_anchor=(1.02, 0.5))
    return _save(figure, path)
