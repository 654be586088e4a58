"""Multi-view contrastive views: the frontal and lateral images of one study (paper 000 §2-3; SPEC §3.2, §4).

MVCon pretrains on the same study pairs as MVMAE, so this module re-exports ``study_pairs`` and
``load_study_pair`` under the ``mvcon`` name stem (no masking: each whole image gives one CLS embedding).
"""

from kmedssl.views.mvmae import load_study_pair, study_pairs

__all__ = ["load_study_pair", "study_pairs"]
