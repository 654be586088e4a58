"""Opening a data source: the embedded phantom, or a path in one of the on-disk formats (SPEC §4).

A source has ``records`` (list of ``ImageRecord``), ``label_names``, ``splits`` (official subject
splits or None), ``skipped`` (items left out by ``on_error="skip"``), ``metadata`` (the modality ⊕
anatomy encoder of paper 001) and ``load_image(record, image_size)`` returning a preprocessed
(image_size, image_size) float32 image in [0, 1].
"""

import collections
import pathlib

import numpy as np

from kmedssl.data import phantom
from kmedssl.data.images import preprocess, read_image
from kmedssl.data.metadata import MetadataEncoder
from kmedssl.data.splits import subject_split

SOURCE_KINDS = ("chest", "multimodal")
RENDER_CACHE_BYTES = 1 << 30  # rendered phantom images kept per process (64 px: 16 KiB each)


class _RenderCache:
    """A process-wide LRU of rendered phantom images, bounded in bytes: rendering costs 3-25 ms per image,
    and training epochs and evaluations of the same cohort ask for the same images again."""

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self.images = collections.OrderedDict()
        self.bytes = 0

    def get(self, key, render):
        """A copy of the cached image for ``key``, rendered with ``render()`` on a miss."""
        if key in self.images:
            self.images.move_to_end(key)
            return self.images[key].copy()
        image = render()
        self.images[key] = image.copy()
        self.bytes += image.nbytes
        while self.bytes > self.max_bytes and self.images:
            self.bytes -= self.images.popitem(last=False)[1].nbytes
        return image


_RENDERED = _RenderCache(RENDER_CACHE_BYTES)


class PhantomSource:
    """The embedded phantom data (``kmedssl.data.phantom``).

    Args:
        kind: ``"chest"`` (frontal/lateral radiograph studies with pathology labels) or ``"multimodal"``
            (modalities x anatomies with the metadata multi-hot of paper 001).
        size: number of subjects (chest) or images (multimodal).
        seed: seed of the phantom cohort.
    """

    splits = None
    skipped = ()

    def __init__(self, kind="chest", size=500, seed=0):
        if kind not in SOURCE_KINDS:
            raise ValueError(f"Expected kind in {SOURCE_KINDS}. Received: kind={kind!r}")
        if kind == "chest":
            self.cohort = phantom.ChestCohort(num_subjects=size, seed=seed)
        else:
            self.cohort = phantom.MultiModalCohort(num_images=size, seed=seed)
        self.cohort_key = (kind, int(size), int(seed))
        self.records = list(self.cohort.records)
        self.label_names = tuple(self.cohort.label_names)
        self.metadata = MetadataEncoder(phantom.MODALITIES, phantom.ANATOMIES)

    def load_image(self, record, image_size):
        """The rendered image (cached per process: the phantom is a deterministic function of its seed)."""
        key = (*self.cohort_key, record.image_id, int(image_size))
        return _RENDERED.get(key, lambda: np.asarray(self.cohort.render(record, image_size=image_size)))


class FileSource:
    """A data set read from disk by ``kmedssl.data.formats.read_dataset``."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.records = list(dataset.records)
        if not self.records:
            raise ValueError(f"Expected images in {dataset.root} ({dataset.format} format). Received: none readable")
        self.label_names = tuple(dataset.label_names)
        self.splits = dataset.splits
        self.skipped = list(dataset.skipped)
        self.metadata = MetadataEncoder.from_records(self.records)

    def load_image(self, record, image_size):
        image = self.dataset.loader(record) if self.dataset.loader else read_image(record.path)
        return preprocess(image, image_size)


def open_source(data="phantom", kind="chest", size=500, seed=0, format=None, on_error="raise"):
    """``"phantom"`` (of ``kind``, ``size`` and ``seed``) or a path read in ``format`` (inferred if None)."""
    if data == "phantom":
        return PhantomSource(kind=kind, size=size, seed=seed)
    from kmedssl.data.formats import read_dataset

    if not pathlib.Path(data).exists():
        raise FileNotFoundError(f"{data}: no such file or directory (expected 'phantom' or a data path)")
    return FileSource(read_dataset(data, format=format, on_error=on_error))


def split_records(source, seed=0):
    """``{"train", "val", "test"}`` records: the source's official subject split, else 80/10/10 by subject."""
    if source.splits is None:
        return subject_split(source.records, seed=seed)
    splits = {"train": [], "val": [], "test": []}
    for record in source.records:
        splits[source.splits.get(record.subject_id, "train")].append(record)
    return splits
