"""Writing the chest phantom as a generic image + mask folder: the images with their dense ground truth.

``write_masks(out_dir)`` renders a ``ChestCohort`` and writes, for every image (``ground_truth`` names)::

    out_dir/images/NNNNNN.png                   8-bit grey PNG (NNNNNN: the image's number, record order)
    out_dir/masks/STRUCTURE/NNNNNN.png          8-bit PNG, 255 inside the structure, 0 outside; one folder
                                                per name in ``ground_truth.STRUCTURES``, every image in each
    out_dir/landmarks.csv                       path, landmark, x, y, visible (one row per image and landmark)
    out_dir/index.csv                           path, subject, study, view, split, label_<finding>
                                                (the folder format's CSV)

``x`` is the column and ``y`` the row in pixels (pixel centres at integers), ``visible`` is 1 when the
landmark projects inside the image. Nothing identifies a patient: images are numbered, ``subject`` and
``study`` are numbers in order of first appearance (they only group a study's views and a subject's
studies), and there is no sex or age. ``split`` is the seeded 80/10/10 subject split
(``kmedssl.data.splits.subject_split``). The folder is read by the ``masks`` format
(``kmedssl.data.formats.masks``); ``index.csv`` also makes its images readable by the folder reader
(``--format folder``). The output is a function of the arguments alone.
"""

import csv

import numpy as np
from PIL import Image

from kmedssl.data.phantom import CHEST_LABELS, ChestCohort
from kmedssl.data.phantom.ground_truth import LANDMARKS, STRUCTURES
from kmedssl.data.phantom.writer import counted, prepare_layout
from kmedssl.data.splits import subject_split

LANDMARK_COLUMNS = ("path", "landmark", "x", "y", "visible")
INDEX_COLUMNS = ("path", "subject", "study", "view", "split") + tuple(f"label_{name}" for name in CHEST_LABELS)


def write_masks(out_dir, num_subjects=50, image_size=256, seed=0, progress=None):
    """Write the phantom ``ChestCohort(num_subjects, seed)`` with masks and landmarks under ``out_dir``.

    Args:
        out_dir: folder to write; created if needed, and it must be empty (``writer.refuse_non_empty``).
        num_subjects: number of simulated patients (positive integer).
        image_size: side of the square images and masks in pixels (integer >= 8).
        seed: non-negative integer seed of the cohort and the split.
        progress: as for ``writer.write_mimic_cxr``.

    Returns:
        ``pathlib.Path`` of ``out_dir``; its images read back with ``kmedssl.data.formats.folder.read``.

    Raises:
        FileExistsError: ``out_dir`` is a file or a folder that is not empty.
    """
    out, size = prepare_layout(out_dir, image_size)
    cohort = ChestCohort(num_subjects=num_subjects, seed=seed)
    for folder in ["images"] + [f"masks/{name}" for name in STRUCTURES]:
        (out / folder).mkdir(parents=True, exist_ok=True)
    split_of = {r.image_id: name for name, records in subject_split(cohort.records, seed=cohort.seed).items()
                for r in records}
    subjects, studies = {}, {}  # cohort id -> pseudonymous number, in order of first appearance
    index, landmarks = [], []
    for n, record in enumerate(counted(cohort.records, progress)):
        name = f"{n:06d}.png"
        path = f"images/{name}"
        _save(out / path, cohort.render(record, image_size=size) * 255.0)
        truth = cohort.ground_truth(record, size)
        for structure in STRUCTURES:
            _save(out / "masks" / structure / name, truth.masks[structure] * 255.0)
        subject = subjects.setdefault(record.subject_id, f"{len(subjects) + 1:06d}")
        study = studies.setdefault(record.study_id, f"{len(studies) + 1:06d}")
        index.append((path, subject, study, record.view, split_of[record.image_id])
                     + tuple(f"{v:g}" for v in record.labels))
        landmarks += [(path, key, f"{truth.landmarks[key].x:.4f}", f"{truth.landmarks[key].y:.4f}",
                       int(truth.landmarks[key].visible)) for key in LANDMARKS]
    _write_csv(out / "index.csv", INDEX_COLUMNS, index)
    _write_csv(out / "landmarks.csv", LANDMARK_COLUMNS, landmarks)
    return out


def _save(path, pixels):
    Image.fromarray(np.round(pixels).astype(np.uint8)).save(path, format="PNG")


def _write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
