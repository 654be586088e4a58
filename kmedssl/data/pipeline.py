"""The input pipeline: batches of per-sample views for ``model.fit`` on every backend (no TensorFlow needed).

``ViewDataset`` is a ``keras.utils.PyDataset``: batch ``i`` of epoch ``e`` (``ViewDataset.batch(e, i)``) is
built from a permutation drawn from ``(seed, e)`` and per-sample random views drawn from
``(seed, e, sample_index)``, so the data order and augmentations are reproducible from one seed whatever
the number of workers. ``ViewDataset.epoch_batches(e, start)`` serves batches ``start, start + 1, ...`` of
epoch ``e`` to one ``fit`` epoch: a run resumed at any batch continues with exactly the same data.
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

    def batch(self, epoch, batch_index, part=(0, 1)):
        """Batch ``batch_index`` of ``epoch``: a function of ``(seed, epoch, batch_index)`` and the data only.

        ``part=(p, n)``: only rows ``[p b, (p + 1) b)``, ``b = batch_size / n``, of that batch (a data-parallel
        process's rows), loaded alone: each sample's views are keyed by ``(seed, epoch, sample index)``, so
        they are exactly those rows of the whole batch."""
        if not 0 <= batch_index < len(self):
            raise IndexError(f"Batch index {batch_index} out of range [0, {len(self)})")
        position, parts = part
        size = self.batch_size // parts
        first = batch_index * self.batch_size + position * size
        indices = self.order(epoch)[first:first + size]
        items = [self.sample_views(int(i), epoch) for i in indices]
        batch = {key: np.stack([item[key] for item in items]) for key in items[0]}
        if self.target is None:
            return batch
        return batch, batch.pop(self.target)

    def __getitem__(self, batch_index):
        return self.batch(self.epoch, batch_index)

    def on_epoch_end(self):
        self.epoch += 1

    def epoch_batches(self, epoch, start=0, stop=None):
        """Batches ``start .. stop - 1`` of ``epoch`` as a dataset for one ``fit`` epoch (``EpochBatches``)."""
        return EpochBatches(self, epoch, start, stop)


class EpochBatches(keras.utils.PyDataset):
    """Batches ``start .. stop - 1`` of one epoch of a ``ViewDataset``, for a ``fit`` call of one epoch.

    Batch ``i`` is ``dataset.batch(epoch, start + i)``: the content depends on nothing Keras does (epoch
    callbacks, prefetching threads), so a run that trains epoch by epoch, or resumes at batch ``start`` of an
    epoch, sees exactly the batches of an uninterrupted run. Workers and queue size are the dataset's.
    """

    def __init__(self, dataset, epoch, start=0, stop=None, part=(0, 1)):
        super().__init__(workers=dataset.workers, use_multiprocessing=dataset.use_multiprocessing,
                         max_queue_size=dataset.max_queue_size)
        stop = len(dataset) if stop is None else stop
        if not 0 <= start < stop <= len(dataset):
            raise ValueError(f"Expected 0 <= start < stop <= {len(dataset)} batches. Received: start={start}, "
                             f"stop={stop}")
        self.dataset = dataset
        self.epoch = int(epoch)
        self.start = int(start)
        self.stop = int(stop)
        self.part = tuple(part)

    def __len__(self):
        return self.stop - self.start

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"Batch index {index} out of range [0, {len(self)})")
        return self.dataset.batch(self.epoch, self.start + index, self.part)

    def process_rows(self, rank, processes):
        """The same batches, of which process ``rank`` of ``processes`` loads only its rows (``batch``'s
        ``part``): under torch DDP or several JAX hosts no process decodes the other processes' images."""
        return EpochBatches(self.dataset, self.epoch, self.start, self.stop, part=(rank, processes))
