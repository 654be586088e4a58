"""Writing the multi-modality phantom to disk in the RadImageNet layout, so the real reader is exercised by it.

``write_radimagenet(out_dir)`` renders a ``MultiModalCohort`` and writes one 8-bit grey PNG per record::

    out_dir/MODALITY/ANATOMY/PATHOLOGY/IMAGE_ID.png      e.g. CT/chest/abnormal/mm0-0000012.png

MODALITY is the record's modality (XR, CT, MR, US), ANATOMY its anatomy (chest, abdomen, knee, brain) and
PATHOLOGY ``"abnormal"`` when the phantom carries a lesion (``record.labels == (1.0,)``), else ``"normal"``
(the cohort exposes no finer class). Reading the folder back with ``kmedssl.data.formats.radimagenet.read``
gives records with the same modality and anatomy, so ``metadata_multi_hot`` of the read records equals
that of the cohort's. The output is a function of the arguments alone.
"""

import pathlib

import numpy as np
from PIL import Image

from kmedssl.data.phantom import MultiModalCohort
from kmedssl.data.phantom.writer import counted, prepare_layout


def write_radimagenet(out_dir, num_images=200, image_size=64, seed=0, progress=None):
    """Write the phantom ``MultiModalCohort(num_images, seed)`` as a RadImageNet folder tree.

    Args:
        out_dir: folder to write; created if needed, and it must be empty (``writer.refuse_non_empty``).
        num_images: number of images (positive integer).
        image_size: side of the square PNG images in pixels (integer >= 8).
        seed: non-negative integer seed of the cohort.
        progress: as for ``writer.write_mimic_cxr``.

    Returns:
        ``pathlib.Path`` of ``out_dir``, readable with ``kmedssl.data.formats.radimagenet.read``.

    Raises:
        FileExistsError: ``out_dir`` is a file or a folder that is not empty.
    """
    out, size = prepare_layout(out_dir, image_size)
    cohort = MultiModalCohort(num_images=num_images, seed=seed)
    for record in counted(cohort.records, progress):
        path = out / image_path(record)
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.round(cohort.render(record, image_size=size) * 255.0).astype(np.uint8)
        Image.fromarray(pixels).save(path, format="PNG")
    return out


def image_path(record):
    """``MODALITY/ANATOMY/PATHOLOGY/IMAGE_ID.png`` of a ``MultiModalCohort`` record, relative to the root."""
    pathology = "abnormal" if record.labels[0] == 1.0 else "normal"
    return pathlib.PurePosixPath(record.modality, record.anatomy, pathology, f"{record.image_id}.png")
