"""Opening sources: the phantom source renders deterministically and caches rendered images per process."""

import numpy as np
import pytest

from kmedssl.data import sources

pytestmark = pytest.mark.backend_free


def test_phantom_source_cache_returns_the_rendered_image_and_protects_it(monkeypatch):
    monkeypatch.setattr(sources, "_RENDERED", sources._RenderCache(1 << 20))
    source = sources.open_source("phantom", kind="chest", size=4, seed=3)
    record = source.records[0]
    first = source.load_image(record, 32)
    np.testing.assert_array_equal(first, source.cohort.render(record, image_size=32))
    first[:] = -1.0  # a caller writing into its image must not change what later callers get
    again = sources.open_source("phantom", kind="chest", size=4, seed=3).load_image(record, 32)
    np.testing.assert_array_equal(again, source.cohort.render(record, image_size=32))
    assert len(sources._RENDERED.images) == 1


def test_phantom_source_cache_is_keyed_by_cohort_and_size_and_bounded(monkeypatch):
    cache = sources._RenderCache(3 * 32 * 32 * 4)  # room for three 32-px float32 images
    monkeypatch.setattr(sources, "_RENDERED", cache)
    source = sources.open_source("phantom", kind="chest", size=4, seed=3)
    other_seed = sources.open_source("phantom", kind="chest", size=4, seed=4)
    a, b = source.load_image(source.records[0], 32), other_seed.load_image(other_seed.records[0], 32)
    assert not np.array_equal(a, b)
    assert source.load_image(source.records[0], 16).shape == (16, 16)
    for record in source.records[1:4]:
        source.load_image(record, 32)
    assert cache.bytes <= cache.max_bytes
    assert len(cache.images) == 3
