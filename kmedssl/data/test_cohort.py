"""The phantom's test cohort (SPEC §5): its own subjects, never seen by pretraining or probe training.

Pretraining and probe training draw phantom subjects from ``ChestCohort(num_subjects, seed=data_seed)``
(recipes: ``data_seed``, ``split_seed``). The test cohort is a separate ``ChestCohort`` whose seed lives in
a namespace no training seed reaches, and whose records carry their own ids:

- **Seed namespace.** The phantom draws every random number from ``SeedSequence([seed, what, subject,
  ...])``. A seed below 2**32 is one 32-bit word, so a training key reads ``[seed, what, ...]`` with
  ``what`` in 1..5. Test cohort ``t`` (0 <= t < 2**32) uses the phantom seed ``TEST_NAMESPACE * 2**32 + t``,
  i.e. the words ``[t, TEST_NAMESPACE, what, ...]``: its second word is ``TEST_NAMESPACE`` (not 1..5),
  so no random stream of a test cohort is a stream of any training cohort (chest or multimodal) with a
  seed below 2**32 (SeedSequence pads keys shorter than 4 words with zeros; the second word still differs).
  Only the phantom seeds ``TEST_NAMESPACE * 2**32 + t`` themselves are reserved.
- **Ids.** ``subject_id``, ``study_id`` and ``image_id`` are prefixed ``test<t>-`` (training cohorts use bare
  numbers), so a test can assert disjointness by id as well as by content.
- **Size.** ``size`` counts *studies* (SPEC §5: >= 2,000 by default): the first subjects of the cohort, the
  last one possibly with only its first studies.

Rendering costs ~20-40 ms per 64-px image on one core, so the images are rendered once (in this process, or
in ``workers`` spawned processes) and kept in a disk cache: ``cache_dir()`` is ``$KMEDSSL_CACHE``, else ``$XDG_CACHE_HOME/kmedssl``,
else ``~/.cache/kmedssl``; one ``phantom-test-*.npz`` per (cohort, size, image size, phantom fingerprint),
written atomically (temporary file + rename) and read with ``allow_pickle=False``. The fingerprint hashes
the phantom's source code and the NumPy version, so a changed phantom never reads stale images. Deleting
the folder (or any file in it) is always safe: the images are rendered again on the next use.

Example:
    >>> source = phantom_test_cohort(size=2000, image_size=64)   # renders once, then reads the cache
    >>> image = source.load_image(source.records[0], 64)         # (64, 64) float32 in [0, 1]
"""

import concurrent.futures
import dataclasses
import functools
import hashlib
import multiprocessing
import os
import pathlib
import tempfile
import warnings

import numpy as np

from kmedssl.data import phantom
from kmedssl.data.metadata import MetadataEncoder

TEST_COHORT_SEED = 0
TEST_COHORT_STUDIES = 2000
TEST_NAMESPACE = 0x7E57C0DE  # the second SeedSequence word of every test-cohort key ("test code")
CACHE_ENV = "KMEDSSL_CACHE"
_FORMAT = 1  # layout of the .npz files
_PARALLEL_MIN_IMAGES = 256  # below this, rendering in this process is faster than starting workers


def cache_dir():
    """The disk cache folder: ``$KMEDSSL_CACHE``, else ``$XDG_CACHE_HOME/kmedssl``, else ``~/.cache/kmedssl``.

    Not created here. Everything in it can be deleted at any time (it is re-rendered when needed).
    """
    explicit = os.environ.get(CACHE_ENV, "").strip()
    if explicit:
        return pathlib.Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = pathlib.Path(xdg) if xdg and os.path.isabs(xdg) else pathlib.Path.home() / ".cache"  # XDG: absolute only
    return base / "kmedssl"


@functools.cache
def phantom_fingerprint():
    """12 hex digits identifying the phantom's renderer: its source files and the NumPy version."""
    digest = hashlib.sha256(f"numpy {np.__version__}\n".encode())
    for path in sorted(pathlib.Path(phantom.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _check_index(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not minimum <= value < 2**32:
        raise ValueError(f"Expected {name} to be an integer in [{minimum}, 2**32). Received: {name}={value!r}")
    return int(value)


def _render_rows(cohort, originals, image_size):
    """(n, S, S) float32 images of ``originals`` (a worker's share; module level so that it pickles)."""
    out = np.empty((len(originals), image_size, image_size), "float32")
    for row, record in enumerate(originals):
        out[row] = cohort.render(record, image_size=image_size)
    return out


class PhantomTestSource:
    """The test cohort as a data source (the interface of ``kmedssl.data.sources.PhantomSource``).

    Every record belongs to the test split: ``splits`` is None and ``split_records`` is not needed;
    use ``source.records`` as the test records.

    Args:
        size: number of studies (>= 1).
        seed: the test cohort's number in its own seed namespace (0 <= seed < 2**32).
        workers: processes rendering a missing cache file (1: this process). More than 1 starts "spawn"
            worker processes, which import the caller's ``__main__`` module: a script must then guard its
            top-level code with ``if __name__ == "__main__":`` (the multiprocessing rule). None: the CPUs
            this process may use, at most 8.
        cache: False keeps the images in memory only (no disk cache).

    Attributes:
        records: the test records, ordered by subject and study (ids prefixed ``test<seed>-``).
        label_names: ``phantom.CHEST_LABELS``.
        cohort: the underlying ``phantom.ChestCohort`` (seed ``phantom_seed``).
    """

    kind = "chest"
    splits = None
    skipped = ()

    def __init__(self, size=TEST_COHORT_STUDIES, seed=TEST_COHORT_SEED, workers=1, cache=True):
        self.size = _check_index("size", size, 1)
        self.seed = _check_index("seed", seed, 0)
        self.phantom_seed = TEST_NAMESPACE * 2**32 + self.seed
        self.workers = workers
        self.cache = bool(cache)
        self.cohort = phantom.ChestCohort(num_subjects=self.size, seed=self.phantom_seed)  # >= size studies
        self.label_names = tuple(self.cohort.label_names)
        self.metadata = MetadataEncoder(phantom.MODALITIES, phantom.ANATOMIES)
        prefix = f"test{self.seed}-"
        studies, self.records, self._originals = set(), [], []
        for record in self.cohort.records:
            if record.study_id not in studies and len(studies) == self.size:
                break
            studies.add(record.study_id)
            self._originals.append(record)
            self.records.append(dataclasses.replace(record, image_id=prefix + record.image_id,
                                                    subject_id=prefix + record.subject_id,
                                                    study_id=prefix + record.study_id))
        self._row = {record.image_id: row for row, record in enumerate(self.records)}
        self._images = {}

    @property
    def n_studies(self):
        return self.size

    def cache_path(self, image_size):
        """The cache file of this cohort's images at ``image_size`` (it may not exist yet)."""
        name = f"phantom-test-chest-t{self.seed}-n{self.size}-px{int(image_size)}-{phantom_fingerprint()}.npz"
        return cache_dir() / name

    def images(self, image_size):
        """(N, S, S) float32 read-only images of ``records``, in order: from memory, else the disk cache,
        else rendered (and then cached)."""
        image_size = int(image_size)
        if image_size not in self._images:
            images = self._read_cache(image_size) if self.cache else None
            if images is None:
                images = self._render(image_size)
                if self.cache:
                    self._write_cache(image_size, images)
            images.setflags(write=False)
            self._images[image_size] = images
        return self._images[image_size]

    def load_image(self, record, image_size):
        """The (image_size, image_size) float32 image of a test record (a copy)."""
        row = self._row.get(getattr(record, "image_id", None))
        if row is None:
            raise ValueError(f"Expected a record of the phantom test cohort (seed={self.seed}). Received: {record!r}")
        return self.images(image_size)[row].copy()

    # === Rendering and the disk cache ===

    def _worker_count(self):
        if self.workers is not None:
            return _check_index("workers", self.workers, 1)
        try:
            available = len(os.sched_getaffinity(0))
        except AttributeError:
            available = os.cpu_count() or 1
        return max(1, min(8, available))

    def _render(self, image_size):
        workers = min(self._worker_count(), max(1, len(self._originals) // 64))
        if workers == 1 or len(self._originals) < _PARALLEL_MIN_IMAGES:
            return _render_rows(self.cohort, self._originals, image_size)
        # Contiguous chunks, cut at subject boundaries (a subject's scenes are cached while rendering it).
        bounds = np.linspace(0, len(self._originals), 4 * workers + 1).astype(int)
        chunks, start = [], 0
        for end in bounds[1:]:
            while 0 < end < len(self._originals) and (self._originals[end].subject_id ==
                                                      self._originals[end - 1].subject_id):
                end += 1
            if end > start:
                chunks.append(self._originals[start:end])
                start = end
        context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads (torch)
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
            parts = list(pool.map(_render_rows, [self.cohort] * len(chunks), chunks, [image_size] * len(chunks)))
        return np.concatenate(parts)

    def _expected(self, image_size):
        return {"format": _FORMAT, "fingerprint": phantom_fingerprint(), "phantom_seed": str(self.phantom_seed),
                "size": self.size, "image_size": image_size}

    def _read_cache(self, image_size):
        path = self.cache_path(image_size)
        if not path.exists():
            return None
        try:
            with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:  # closed on any error
                meta = {key: data[key].item() for key in self._expected(image_size)}
                ids = data["image_ids"]
                images = data["images"]
            if meta != self._expected(image_size) or ids.tolist() != [r.image_id for r in self.records]:
                raise ValueError("it holds another cohort")
            if images.dtype != np.float32 or images.shape != (len(self.records), image_size, image_size):
                raise ValueError(f"images of {images.dtype} {images.shape}")
            return np.ascontiguousarray(images)
        except Exception as error:  # noqa: BLE001  (any unreadable file: render again)
            warnings.warn(f"kmedssl: unreadable test-cohort cache {path} ({type(error).__name__}: {error}); "
                          f"rendering it again", RuntimeWarning, stacklevel=3)
            return None

    def _write_cache(self, image_size, images):
        path = self.cache_path(image_size)
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name + ".", suffix=".tmp",
                                             delete=False) as handle:
                tmp = handle.name
                meta = {key: np.asarray(value) for key, value in self._expected(image_size).items()}
                np.savez(handle, images=images, image_ids=np.asarray([r.image_id for r in self.records]), **meta)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)  # atomic: readers see no file, the old one or the whole new one
        except OSError as error:
            warnings.warn(f"kmedssl: could not write the test-cohort cache {path} ({error}); the images stay "
                          f"in memory only", RuntimeWarning, stacklevel=3)
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)


def phantom_test_cohort(size=TEST_COHORT_STUDIES, seed=TEST_COHORT_SEED, image_size=64, workers=1, cache=True):
    """The phantom test cohort of ``size`` studies, with its images at ``image_size`` ready (None: lazily).

    Args:
        size: studies (default 2,000). seed: test cohort number (0 <= seed < 2**32), in the test namespace.
        image_size: render or read the images at this size now (``load_image`` works at any size).
        workers: rendering processes (1: this process; see ``PhantomTestSource``). cache: use the disk cache.

    Returns:
        ``PhantomTestSource``: every record is a test record; ``source.cache_path(image_size)`` is the file.
    """
    source = PhantomTestSource(size=size, seed=seed, workers=workers, cache=cache)
    if image_size is not None:
        source.images(image_size)
    return source


__all__ = ["CACHE_ENV", "PhantomTestSource", "TEST_COHORT_SEED", "TEST_COHORT_STUDIES", "TEST_NAMESPACE", "cache_dir",
           "phantom_fingerprint", "phantom_test_cohort"]
