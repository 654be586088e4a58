"""The embedded phantom data set (SPEC §4 "Phantom"): simulated patients, studies and images.

``ChestCohort`` yields chest radiograph studies in the shape of MIMIC-CXR (paper 000 §2): subjects with
1-3 studies, each with frontal (PA/AP) and/or lateral (LATERAL/LL) views and study-level multi-hot labels.
Every subject is a random 3-D anatomical phantom (``chest``) whose size, fat, heart and bone
density follow sex and age; pathologies are 3-D changes of it; radiographs are Beer–Lambert projections
of the same volume along two axes, so the frontal and lateral views of a study are two views of one
anatomy. ``MultiModalCohort`` yields CT/MR/US slices and radiographs of chest, abdomen, knee and brain
phantoms with modality⊕anatomy metadata (paper 001 §3.1).

Everything is deterministic: every random number comes from ``np.random.default_rng(SeedSequence(...))``
keyed by (seed, what, subject, study, image), never from global state, so ``render(record, size)`` gives
the same array in any process and in any order.

Example:
    >>> cohort = ChestCohort(num_subjects=20, seed=0)
    >>> record = cohort.records[0]
    >>> image = cohort.render(record, image_size=64)   # (64, 64) float32 in [0, 1]
"""

import collections
import dataclasses

import numpy as np

from kmedssl.data.phantom import chest
from kmedssl.data.phantom import scene as scene_lib
from kmedssl.data.phantom.ground_truth import view_ground_truth, study_ground_truth
from kmedssl.data.phantom.imaging import radiograph
from kmedssl.data.phantom.modalities import ANATOMIES, COMBINATIONS, MODALITIES, render_multimodal, sample_case
from kmedssl.data.records import ImageRecord

CHEST_LABELS = chest.CHEST_LABELS
MULTIMODAL_LABELS = ("abnormal",)

_PLAN, _ANATOMY, _FINDINGS, _IMAGE, _CASE = range(1, 6)
_CACHE_SIZE = 48


def _rng(*key):
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Expected {name} to be a positive integer. Received: {name}={value!r}")


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"Expected seed to be a non-negative integer. Received: seed={seed!r}")


def _check_size(image_size):
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise ValueError(f"Expected image_size to be an integer >= 8. Received: image_size={image_size!r}")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class _Cached:
    """Small per-instance LRU caches of compiled scenes (dropped when pickled, rebuilt on demand)."""

    def _cached(self, kind, key, build):
        caches = self.__dict__.setdefault("_caches", {})
        cache = caches.setdefault(kind, collections.OrderedDict())
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = build()
        cache[key] = value
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
        return value

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_caches"}


@dataclasses.dataclass(frozen=True)
class _Subject:
    sex: str
    age: float
    studies: tuple  # per study: (frozenset of present labels, tuple of views)


class ChestCohort(_Cached):
    """Chest radiograph subjects with 1-3 studies each (frontal and/or lateral views, 6 pathology labels).

    Args:
        num_subjects: number of simulated patients.
        seed: non-negative integer; the whole cohort (records and pixels) is a function of it.

    Attributes:
        records: list of ``ImageRecord`` (modality "XR", anatomy "chest"), ordered by subject and study.
        label_names: ``CHEST_LABELS``; ``record.labels`` is the study-level multi-hot over them.
    """

    label_names = CHEST_LABELS

    def __init__(self, num_subjects=200, seed=0):
        _check_count("num_subjects", num_subjects)
        _check_seed(seed)
        self.num_subjects = int(num_subjects)
        self.seed = int(seed)
        self._subjects = [self._plan(i) for i in range(self.num_subjects)]
        self.records = []
        self._where = {}
        for i, subject in enumerate(self._subjects):
            for k, (present, views) in enumerate(subject.studies):
                labels = tuple(float(name in present) for name in CHEST_LABELS)
                study_id = str(50_000_000 + 10 * i + k)
                for v, view in enumerate(views):
                    record = ImageRecord(image_id=f"{study_id}-{v}", subject_id=str(10_000_000 + i),
                                         study_id=study_id, view=view, modality="XR", anatomy="chest",
                                         labels=labels, sex=subject.sex, age=subject.age)
                    self.records.append(record)
                    self._where[record.image_id] = (i, k, v)

    # === Plan (records and labels; no geometry) ===

    def _plan(self, i):
        rng = _rng(self.seed, _PLAN, i)
        sex = "F" if rng.random() < 0.5 else "M"
        age = float(np.clip(np.round(rng.normal(62.0, 16.0)), 18.0, 95.0))
        heart_risk = rng.normal() + 0.03 * (age - 62.0)
        frailty = rng.normal() + 0.02 * (age - 62.0)
        nodular = rng.random() < 0.22
        studies, present = [], frozenset()
        for _ in range(1 + int(rng.random() < 0.45) + int(rng.random() < 0.3)):
            present = self._draw_labels(rng, heart_risk, frailty, nodular, present)
            studies.append((present, self._draw_views(rng, frailty)))
        return _Subject(sex=sex, age=age, studies=tuple(studies))

    @staticmethod
    def _draw_labels(rng, heart_risk, frailty, nodular, previous):
        """Correlated findings (heart failure -> cardiomegaly + effusion; effusion -> atelectasis) that
        persist into follow-up studies with probability 0.75 (nodules 0.9)."""
        base = {"cardiomegaly": _sigmoid(-1.4 + 1.3 * heart_risk),
                "effusion": _sigmoid(-1.6 + 0.9 * heart_risk + 0.5 * frailty),
                "nodule": 0.6 if nodular else 0.03,
                "pneumothorax": _sigmoid(-2.4 + 0.4 * frailty),
                "consolidation": _sigmoid(-1.7 + 0.7 * frailty),
                "atelectasis": _sigmoid(-1.9 + 0.6 * frailty)}
        present = set()
        for name in CHEST_LABELS:
            p = (0.9 if name == "nodule" else 0.75) if name in previous else base[name]
            if name == "atelectasis" and "effusion" in present:
                p = min(1.0, p + 0.2)
            if rng.random() < p:
                present.add(name)
        return frozenset(present)

    @staticmethod
    def _draw_views(rng, frailty):
        """Mostly frontal + lateral; some single views and some studies with two frontals."""
        frontal = "AP" if rng.random() < 0.15 + 0.3 * _sigmoid(frailty) else "PA"
        second = "AP" if rng.random() < 0.5 else frontal
        lateral = "LL" if rng.random() < 0.25 else "LATERAL"
        r = rng.random()
        if r < 0.62:
            return (frontal, lateral)
        if r < 0.72:
            return (frontal, second, lateral)
        if r < 0.86:
            return (frontal,)
        if r < 0.93:
            return (frontal, second)
        return (lateral,)

    # === Geometry (cached) ===

    def _anatomy(self, i):
        subject = self._subjects[i]
        return self._cached("anatomy", i, lambda: chest.sample_anatomy(_rng(self.seed, _ANATOMY, i),
                                                                       subject.sex, subject.age))

    def _findings(self, i):
        def build():
            out, previous = [], None
            for k, (present, _) in enumerate(self._subjects[i].studies):
                rng = _rng(self.seed, _FINDINGS, i, k)
                previous = chest.sample_findings(rng, self._anatomy(i), present, previous)
                out.append(previous)
            return tuple(out)

        return self._cached("findings", i, build)

    def _scenes(self, i, k, pose):
        a = self._anatomy(i)
        static = self._cached("static", (i, pose),
                              lambda: scene_lib.build_scene(chest.chest_static_layers(a, pose)))
        study = self._cached("study", (i, k),
                             lambda: scene_lib.build_scene(chest.chest_study_layers(a, self._findings(i)[k])))
        return [static, study]

    def findings(self, record):
        """The ``ChestFindings`` (pathology geometry) of a record's study."""
        i, k, _ = self._locate(record)
        return self._findings(i)[k]

    def _locate(self, record):
        where = self._where.get(getattr(record, "image_id", None))
        if where is None:
            raise ValueError(f"Expected a record of this cohort (seed={self.seed}). Received: {record!r}")
        return where

    def render(self, record, image_size=64):
        """The radiograph of ``record``: (image_size, image_size) float32 in [0, 1], deterministic."""
        _check_size(image_size)
        i, k, v = self._locate(record)
        view = self._subjects[i].studies[k][1][v]
        pose = "arms_up" if view in ("LATERAL", "LL") else view.lower()
        rng = _rng(self.seed, _IMAGE, i, k, v)
        geometry = chest.chest_projection(self._anatomy(i), view, rng)
        return radiograph(self._scenes(i, k, pose), geometry, int(image_size), rng)

    def ground_truth(self, record, image_size=64):
        """The masks and landmarks of ``render(record, image_size)`` (``ground_truth.ChestGroundTruth``): the
        same anatomy, findings and projection (docs/data-phantom-dense.md)."""
        _check_size(image_size)
        i, k, v = self._locate(record)
        view = self._subjects[i].studies[k][1][v]
        # The image's generator starts with the geometry draws (``render``), so this is the image's geometry.
        geometry = chest.chest_projection(self._anatomy(i), view, _rng(self.seed, _IMAGE, i, k, v))
        anatomy, findings = self._anatomy(i), self._findings(i)[k]
        study = self._cached("ground_truth", (i, k), lambda: study_ground_truth(anatomy, findings))  # its views share it
        return view_ground_truth(anatomy, findings, geometry, int(image_size), study)


class MultiModalCohort(_Cached):
    """Single images of many modality x anatomy combinations (``COMBINATIONS``), each its own subject.

    Args:
        num_images: number of images (one subject and one study each).
        seed: non-negative integer; the whole cohort (records and pixels) is a function of it.

    Attributes:
        records: list of ``ImageRecord``; ``view`` is the radiographic view or the slice orientation.
        label_names: ``("abnormal",)``: 1.0 when the image's phantom carries a lesion (lung nodule or
            consolidation, liver lesion or renal cyst, knee effusion with ACL tear, brain tumour).
    """

    label_names = MULTIMODAL_LABELS

    def __init__(self, num_images=400, seed=0):
        _check_count("num_images", num_images)
        _check_seed(seed)
        self.num_images = int(num_images)
        self.seed = int(seed)
        self._cases = [sample_case(_rng(self.seed, _CASE, n)) for n in range(self.num_images)]
        self.records = []
        self._where = {}
        for n, case in enumerate(self._cases):
            record = ImageRecord(image_id=f"mm{self.seed}-{n:07d}", subject_id=str(20_000_000 + n),
                                 study_id=str(60_000_000 + n), view=case.view, modality=case.modality,
                                 anatomy=case.anatomy, labels=(float(case.abnormal),), sex=case.sex, age=case.age)
            self.records.append(record)
            self._where[record.image_id] = n

    def render(self, record, image_size=64):
        """The image of ``record``: (image_size, image_size) float32 in [0, 1], deterministic."""
        _check_size(image_size)
        n = self._where.get(getattr(record, "image_id", None))
        if n is None:
            raise ValueError(f"Expected a record of this cohort (seed={self.seed}). Received: {record!r}")
        case = self._cases[n]
        return render_multimodal(case, int(image_size), _rng(self.seed, _IMAGE, n),
                                 lambda build: self._cached("scene", n, build))


def metadata_multi_hot(records):
    """One-hot modality ⊕ one-hot anatomy (paper 001 §3.1): (N, len(MODALITIES) + len(ANATOMIES)) float32."""
    out = np.zeros((len(records), len(MODALITIES) + len(ANATOMIES)), np.float32)
    for row, record in enumerate(records):
        if record.modality not in MODALITIES or record.anatomy not in ANATOMIES:
            raise ValueError(f"Expected modality in {MODALITIES} and anatomy in {ANATOMIES}. "
                             f"Received: modality={record.modality!r}, anatomy={record.anatomy!r}")
        out[row, MODALITIES.index(record.modality)] = 1.0
        out[row, len(MODALITIES) + ANATOMIES.index(record.anatomy)] = 1.0
    return out


__all__ = ["ANATOMIES", "CHEST_LABELS", "COMBINATIONS", "MODALITIES", "MULTIMODAL_LABELS", "ChestCohort",
           "MultiModalCohort", "metadata_multi_hot"]
