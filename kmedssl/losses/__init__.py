"""Loss functions of every method (API: ``kmedssl.losses``; conventions in SPEC §3).

Each loss is a pure function of backend tensors written with ``keras.ops``: it accepts float32 or
bfloat16, reduces in float32 and returns a scalar. Where a ``keras.losses.Loss`` fits, a class of the same
name in CamelCase wraps it.

The contrastive losses (``nt_xent``, ``multiview_infonce``, ``tsp_infonce``, ``jaccard_supcon``) declare a
positive structure and a similarity and share one form and one dispatch, ``contrastive.contrastive_loss``:
the replica path (``replicas``), then the Triton fused op, the row-blocked engine (``blocked``) or the plain
matrices.
"""

from kmedssl.losses.ace import (
    ace_global_loss,
    ace_matching_loss,
    ace_matching_loss_from_pairs,
    ace_matching_pairs,
    ace_matching_targets,
    ace_matching_targets_from_pairs,
)
from kmedssl.losses.mulsupcon import JaccardSupCon, jaccard_supcon
from kmedssl.losses.mvcon import MultiviewInfoNCE, multiview_infonce
from kmedssl.losses.mvmae import latent_alignment, mae_reconstruction
from kmedssl.losses.simclr import NTXent, nt_xent
from kmedssl.losses.spcl import TSPInfoNCE, tsp_infonce, tsp_similarity

__all__ = [
    "JaccardSupCon",
    "MultiviewInfoNCE",
    "NTXent",
    "TSPInfoNCE",
    "ace_global_loss",
    "ace_matching_loss",
    "ace_matching_loss_from_pairs",
    "ace_matching_pairs",
    "ace_matching_targets",
    "ace_matching_targets_from_pairs",
    "jaccard_supcon",
    "latent_alignment",
    "mae_reconstruction",
    "multiview_infonce",
    "nt_xent",
    "tsp_infonce",
    "tsp_similarity",
]
