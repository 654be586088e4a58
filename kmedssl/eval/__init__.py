"""Evaluation: frozen features, linear probes and metrics (SPEC §5)."""

from kmedssl.eval.features import extract_features, random_init_copy
from kmedssl.eval.linear_probe import fit_linear_probe
from kmedssl.eval.metrics import macro_auroc, per_label_auroc
