"""MVMAE views: the frontal and lateral images of one study, and the patches of each that the encoder sees
(paper 000 §2-3; SPEC §3.1, §4).

- ``study_pairs`` (from ``kmedssl.data.pairing``): the training samples, every frontal x lateral image pair
  of a study, each once.
- ``load_study_pair``: one pair -> the arrays the model takes, ``{"frontal", "lateral"}``.
- ``mask_views``: in the model, the MAE mask of each view; one mask shared by both views for the paper's
  token alignment (Eq. 1), so token t of the two sequences is the same patch position.

``mvcon`` sees the same study pairs (``kmedssl.views.mvcon``) without masking.
"""

from kmedssl.data.pairing import study_pairs
from kmedssl.distributed import replica_uniform
from kmedssl.ops import mae_masking

__all__ = ["load_study_pair", "mask_views", "study_pairs"]


def load_study_pair(source, pair, image_size):
    """The two images of a study pair, one channel each.

    Input: ``pair`` ``(frontal_record, lateral_record)`` from ``study_pairs``; ``source`` with
    ``load_image(record, image_size) -> (S, S)`` (``kmedssl.data.sources``).

    Output: ``{"frontal": (S, S, 1), "lateral": (S, S, 1)}`` float32 arrays, ``S = image_size``.
    """
    frontal, lateral = pair
    return {
        "frontal": source.load_image(frontal, image_size)[..., None],
        "lateral": source.load_image(lateral, image_size)[..., None],
    }


def mask_views(batch_size, num_patches, mask_ratio, shared, seed_generator):
    """The MAE mask of the frontal and of the lateral view (``kmedssl.ops.mae_masking`` of uniform noise).

    Input: batch size B, patch count N, the mask ratio, whether both views share one mask (``True`` for
    ``alignment="tokens"``, paper Eq. 1; ``False`` draws a second, independent noise for ``"pooled"``) and the
    model's ``keras.random.SeedGenerator`` (each replica draws its rows of one global draw).

    Output: ``(frontal, lateral)``, each ``(ids_keep (B, N_keep), mask (B, N) with 1 = masked,
    ids_restore (B, N))`` as returned by ``mae_masking``.
    """
    noise_f = replica_uniform((batch_size, num_patches), seed=seed_generator)  # this replica's rows
    frontal = mae_masking(noise_f, mask_ratio)
    if shared:
        return frontal, frontal
    noise_l = replica_uniform((batch_size, num_patches), seed=seed_generator)
    return frontal, mae_masking(noise_l, mask_ratio)
