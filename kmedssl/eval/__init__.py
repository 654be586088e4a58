"""Evaluation (SPEC §5): frozen features, linear probes, fine-tuning, metrics, bootstrap intervals and paired
differences, statistics, subgroups, ACE property probes, online monitoring and figures."""

from kmedssl.eval.ace_probes import (
    compositionality,
    decompositionality,
    patch_to_image_retrieval,
    plot_similarity_distribution,
)
from kmedssl.eval.features import extract_features, random_init_copy
from kmedssl.eval.finetune import (
    FineTuneClassifier,
    FineTuneRecipe,
    copy_encoder,
    finetune_recipe,
    fit_finetune,
    step_lr_schedule,
    warmup_cosine_schedule,
)
from kmedssl.eval.intervals import Interval, auroc_interval, format_interval, paired_difference
from kmedssl.eval.linear_probe import fit_linear_probe
from kmedssl.eval.metrics import macro_auroc, per_label_auroc
from kmedssl.eval.monitor import ProbeMonitor, knn_scores
from kmedssl.eval.plots import plot_auroc_vs_budget, plot_embedding, plot_roc_curves
from kmedssl.eval.statistics import compare_methods, repeated_kfold_indices, summarize_repeats
from kmedssl.eval.subgroups import subgroup_auroc
