"""RadImageNet (Mei et al. 2022) folder tree and the miniRIN subset of paper 001 §4.1.

Layout (``root`` is the folder that holds the modality folders, e.g. ``radiology_ai/`` of the release)::

    root/MODALITY/ANATOMY/PATHOLOGY/*.png        e.g. CT/lung/nodule/ct_lung_0001.png

The release has 3 modalities (CT, MR, US), 11 anatomies and 165 pathology classes; any names are read.
Each image becomes an ``ImageRecord`` with ``modality`` = the MODALITY folder upper-cased (aliases of
``folder.MODALITY_ALIASES``: MRI -> MR, ...), ``anatomy`` = the ANATOMY folder lower-cased, ``view`` ""
(not recorded), and ``labels`` = the one-hot of its class over ``Dataset.label_names``, the sorted class
names ``"MODALITY/anatomy/PATHOLOGY"`` (the PATHOLOGY folder name is kept as written). A class is every
PATHOLOGY folder that holds at least one image file. The modality ⊕ anatomy multi-hot of paper 001 §3.1
comes from ``record.modality`` and ``record.anatomy`` (``kmedssl.data.metadata.MetadataEncoder``).

RadImageNet publishes no patient or study ids, so no subject can be derived: every image is its own
subject and study (``image_id`` = ``subject_id`` = ``study_id`` = its path relative to ``root``), and
subject splits are splits by image.

Problems (``ErrorPolicy``: raise ``DataError`` naming the file, or skip and count): an image file that is
empty (0 bytes) or cannot be stat'ed, a symbolic link out of ``root`` or looping (``folder.walk_images``),
and an image file at another depth than MODALITY/ANATOMY/PATHOLOGY/
(directly in a MODALITY or ANATOMY folder, or in a folder nested inside a PATHOLOGY folder). Files with
other suffixes (CSV, TXT, ...) and hidden names (``.DS_Store``, ``._x.png``) are ignored. Images are not
decoded here: decoding 1.3 M files would take hours, so a corrupt or truncated PNG raises ``DataError`` from
``kmedssl.data.images.read_image`` when it is loaded (``kmedssl data check`` finds them up front).

Example:
    >>> dataset = read(pathlib.Path("radiology_ai"))
    >>> mini = mini_rin(dataset, per_class=100, seed=0)    # paper 001's miniRIN: <= 100 images per class
"""

import dataclasses
import pathlib
import zlib

import numpy as np

from kmedssl.data.errors import DataError
from kmedssl.data.formats.common import Dataset, ErrorPolicy
from kmedssl.data.formats.folder import file_problem, is_image_name, modality_code, visible_entries, walk_images
from kmedssl.data.records import ImageRecord

FORMAT = "radimagenet"
# Modality folder names recognised by ``looks_like`` (after ``modality_code``); ``read`` accepts any.
KNOWN_MODALITIES = ("CT", "MR", "US", "XR", "MG", "NM", "PT")
_DEPTH = 4  # MODALITY, ANATOMY, PATHOLOGY, file


def looks_like(path):
    """True when every visible sub-folder of ``path`` is a modality name (CT, MR, US, XR, ...) and at
    least one image file sits at MODALITY/ANATOMY/PATHOLOGY/."""
    path = pathlib.Path(path)
    try:
        if not path.is_dir():
            return False
        modalities = [e for e in visible_entries(path) if e.is_dir()]
        if not modalities or any(modality_code(e.name) not in KNOWN_MODALITIES for e in modalities):
            return False
        return any(is_image_name(f.name) and f.is_file()
                   for m in modalities for a in visible_entries(m.path) if a.is_dir()
                   for p in visible_entries(a.path) if p.is_dir() for f in visible_entries(p.path))
    except (DataError, OSError):
        return False


def read(root, on_error="raise"):
    """Read a RadImageNet folder tree into a ``Dataset`` (format "radimagenet", one-hot class labels).

    Raises:
        DataError: ``root`` is not a folder or holds no image file, or (with ``on_error="raise"``) the first
            bad file, naming it.
    """
    root = pathlib.Path(root)
    policy = ErrorPolicy(on_error)
    if not root.is_dir():
        raise DataError(f"{root}: expected a folder MODALITY/ANATOMY/PATHOLOGY/*.png (RadImageNet layout)")
    found = []  # (parts, path, class name)
    for parts, path in walk_images(root, policy):
        if len(parts) != _DEPTH:
            policy.problem(path, f"image at depth {len(parts)} below {root}; RadImageNet images sit at "
                                 f"MODALITY/ANATOMY/PATHOLOGY/ (depth {_DEPTH})")
            continue
        found.append((parts, path, class_name(*parts[:3])))
    if not found and not policy.skipped:
        raise DataError(f"{root}: no image files at MODALITY/ANATOMY/PATHOLOGY/*.png (RadImageNet layout)")
    label_names = tuple(sorted({name for _, _, name in found}))
    # One shared tuple per class: 1.3 M records x 165 labels would otherwise hold 1.7 GB of pointers.
    one_hot = {name: tuple(float(name == other) for other in label_names) for name in label_names}
    records = []
    for parts, path, name in found:
        problem = file_problem(path)
        if problem is not None:
            policy.problem(path, problem)
            continue
        image_id = "/".join(parts)
        records.append(ImageRecord(image_id=image_id, subject_id=image_id, study_id=image_id, view="",
                                   modality=modality_code(parts[0]), anatomy=parts[1].strip().lower(),
                                   labels=one_hot[name], path=path))
    return Dataset(format=FORMAT, root=root, records=records, label_names=label_names, skipped=policy.skipped)


def class_name(modality, anatomy, pathology):
    """The class of a MODALITY/ANATOMY/PATHOLOGY folder: ``"CT/lung/nodule"`` (modality upper-cased and
    aliased, anatomy lower-cased, pathology as written)."""
    return f"{modality_code(modality)}/{anatomy.strip().lower()}/{pathology}"


# === miniRIN (paper 001 §4.1) ===


def mini_rin(dataset, per_class=100, seed=0):
    """Paper 001's miniRIN: up to ``per_class`` images of every class, drawn at random (seeded).

    Classes with fewer images keep them all (the paper's 165 classes give 16,222 images at 100). Each
    class is drawn on its own, from a generator keyed by ``(seed, crc32(class name))``, over its records
    sorted by ``image_id``, so the choice does not depend on the record order or on the other classes, and
    subsets are nested: the images kept at ``per_class=n`` are among those kept at any larger ``n``.

    Args:
        dataset: a ``Dataset`` whose records carry one-hot labels over ``dataset.label_names`` (as the
            RadImageNet reader gives).
        per_class: the most images kept per class, a positive integer.
        seed: non-negative integer.

    Returns:
        A new ``Dataset``: the kept records in their original order, the same label names, ``splits``
        restricted to the kept subjects.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise ValueError(f"Expected per_class to be a positive integer. Received: per_class={per_class!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"Expected seed to be a non-negative integer. Received: seed={seed!r}")
    by_class = {}
    for position, record in enumerate(dataset.records):
        by_class.setdefault(_class_index(record, dataset.label_names), []).append(position)
    kept = []
    for label, positions in sorted(by_class.items()):
        positions = sorted(positions, key=lambda p: dataset.records[p].image_id)
        key = zlib.crc32(dataset.label_names[label].encode("utf-8"))
        order = np.random.default_rng([int(seed), key]).permutation(len(positions))
        kept.extend(positions[i] for i in order[:per_class])
    records = [dataset.records[p] for p in sorted(kept)]
    splits = dataset.splits
    if splits is not None:
        subjects = {record.subject_id for record in records}
        splits = {subject: split for subject, split in splits.items() if subject in subjects}
    return dataclasses.replace(dataset, records=records, splits=splits, skipped=list(dataset.skipped))


def _class_index(record, label_names):
    labels = tuple(record.labels)
    if len(labels) != len(label_names) or sorted(labels) != [0.0] * (len(labels) - 1) + [1.0]:
        raise ValueError(f"Expected one-hot labels over {len(label_names)} classes. "
                         f"Received: labels={labels} (image {record.image_id})")
    return labels.index(1.0)
