"""MVMAE / MVCon views (paper 000 §2-3; SPEC §3.1, §4): a study's frontal and lateral images and MVMAE's masks."""

import keras
import numpy as np
import pytest

from kmedssl.data.pairing import study_pairs as data_study_pairs
from kmedssl.views import mvcon, mvmae
from tests.helpers import to_numpy


class FakeSource:
    """``load_image`` returning an image that encodes the record and the size."""

    def load_image(self, record, image_size):
        return np.full((image_size, image_size), float(record), np.float32)


def test_study_pairs_are_the_data_pairing_under_both_stems():
    assert mvmae.study_pairs is data_study_pairs and mvcon.study_pairs is data_study_pairs
    assert mvcon.load_study_pair is mvmae.load_study_pair


def test_load_study_pair_gives_one_channel_frontal_and_lateral():
    out = mvmae.load_study_pair(FakeSource(), (3, 7), image_size=5)
    assert set(out) == {"frontal", "lateral"}
    assert out["frontal"].shape == out["lateral"].shape == (5, 5, 1)
    assert np.all(out["frontal"] == 3.0) and np.all(out["lateral"] == 7.0)


@pytest.mark.parametrize("shared", (True, False))
def test_mask_views_share_one_mask_for_token_alignment(shared):
    frontal, lateral = mvmae.mask_views(6, 16, 0.75, shared=shared, seed_generator=keras.random.SeedGenerator(1))
    for ids_keep, mask, ids_restore in (frontal, lateral):
        assert tuple(ids_keep.shape) == (6, 4) and tuple(mask.shape) == tuple(ids_restore.shape) == (6, 16)
        np.testing.assert_array_equal(to_numpy(mask).sum(axis=1), [12] * 6)  # 1 = masked
    same = all(np.array_equal(to_numpy(a), to_numpy(b)) for a, b in zip(frontal, lateral))
    assert same == shared
