"""The input pipeline: batches of per-sample views for ``model.fit`` on every backend (no TensorFlow needed).

``ViewDataset`` is a ``keras.utils.PyDataset``: batch ``i`` of epoch ``e`` is built from a permutation drawn
from ``(seed, e)`` and per-sample random views drawn from ``(seed, e, sample_index)``, so the data order and
augmentations are reproducible from one seed whatever the number of workers.
"""

import keras
import numpy as np

from kmedssl.data.errors import DataError


class ViewDataset(keras.utils.PyDataset):
    """Batches of ``{name: array}`` dicts built from a list of samples.

    Args:
        samples: list of samples (records, record pairs, ...), anything ``load`` accepts.
        load: ``load(sample) -> dict[str, np.ndarray]``, deterministic (decoded images, labels, metadata).
        views: optional ``views(arrays, rng) -> dict[str, np.ndarray]``, the random per-sample view builder.
        batch_size: samples per batch; the last incomplete batch is dropped (contrastive losses need
            full batches).
        target: optional key moved out of the inputs into ``y`` (supervised training); batches are then
            ``(x, y)``, otherwise ``x`` alone.
        seed: seed of the data order and of the views.
        shuffle: reshuffle the samples every epoch.
        cache: keep ``load`` results in memory (for small generated data sets).
        on_error: ``"raise"``: a ``DataError`` from ``load`` stops training; ``"skip"``: the sample is
            replaced by the next loadable one (in data order) and listed in ``skipped``.
        **kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size`` of ``keras.utils.PyDataset``.
    """

    def __init__(self, samples, load, views=None, batch_size=32, target=None, seed=0, shuffle=True,
                 cache=False, on_error="raise", **kwargs):
        super().__init__(**kwargs)
        self.samples = list(samples)
        if batch_size < 1 or batch_size > len(self.samples):
            raise ValueError(
                f"Expected 1 <= batch_size <= number of samples ({len(self.samples)}). "
                f"Received: batch_size={batch_size}"
            )
        self.load = load
        self.views = views
        self.batch_size = int(batch_size)
        self.target = target
        self.seed = int(seed)
        self.shuffle = shuffle
        self.cache = {} if cache else None
        if on_error not in ("raise", "skip"):
            raise ValueError(f"Expected on_error in ('raise', 'skip'). Received: on_error={on_error!r}")
        self.on_error = on_error
        self.skipped = []
        self.bad = set()
        self.epoch = 0

    def __len__(self):
        return len(self.samples) // self.batch_size

    def order(self, epoch):
        """Sample order of ``epoch``: a seeded permutation, or the identity without shuffling."""
        if not self.shuffle:
            return np.arange(len(self.samples))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.samples))

    def load_sample(self, index):
        """``load`` of sample ``index``; under ``on_error="skip"`` the next loadable sample replaces a bad one."""
        for offset in range(len(self.samples)):
            candidate = (index + offset) % len(self.samples)
            if candidate in self.bad:
                continue
            try:
                return self.load_cached(candidate)
            except DataError as error:
                if self.on_error == "raise":
                    raise
                self.bad.add(candidate)
                sample = self.samples[candidate]
                self.skipped.append((getattr(sample, "path", None) or repr(sample), str(error)))
        raise DataError("no sample of the data set could be loaded (see the skipped list)")

    def load_cached(self, index):
        if self.cache is None:
            return self.load(self.samples[index])
        if index not in self.cache:
            self.cache[index] = self.load(self.samples[index])
        return self.cache[index]

    def sample_views(self, index, epoch):
        arrays = dict(self.load_sample(index))
        if self.views is not None:
            arrays = self.views(arrays, np.random.default_rng([self.seed, epoch, index]))
        return arrays

    def __getitem__(self, batch_index):
        if not 0 <= batch_index < len(self):
            raise IndexError(f"Batch index {batch_index} out of range [0, {len(self)})")
        epoch = self.epoch
        indices = self.order(epoch)[batch_index * self.batch_size:(batch_index + 1) * self.batch_size]
        items = [self.sample_views(int(i), epoch) for i in indices]
        batch = {key: np.stack([item[key] for item in items]) for key in items[0]}
        if self.target is None:
            return batch
        return batch, batch.pop(self.target)

    def on_epoch_end(self):
        self.epoch += 1
