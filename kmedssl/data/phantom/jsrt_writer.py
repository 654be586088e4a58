"""Writing the chest phantom in the JSRT + SCR layout: raw 12-bit ``.IMG`` images and GIF masks.

``write_jsrt(out_dir)`` renders the frontal views (PA, AP) of a ``ChestCohort`` and writes::

    out_dir/images/NAME.IMG                 raw big-endian 16-bit, 12 bits used, ``round((1 - pixel) * 4095)``
    out_dir/masks/FOLDER/NAME.gif           0 / 255 masks at half the image's side, one folder per SCR name
                                            (``kmedssl.data.formats.jsrt.SCR_FOLDERS``)

``NAME`` is ``JPCLN###`` for an image whose study has a nodule, else ``JPCNN###`` (numbered from 001 in
record order, as JSRT). Masks are the phantom's ``ground_truth`` at half the image size (the image's
2 x 2 blocks are the mask's pixels, as SCR's 1024 px masks of 2048 px images). The phantom's masks overlap
(a lung mask includes the part behind the heart); SCR's lung masks exclude the heart: the SCR convention
is not imitated. Nothing identifies a patient. The output is a function of the arguments alone.
"""


import numpy as np
from PIL import Image

from kmedssl.data.formats.jsrt import SCR_FOLDERS, write_raw
from kmedssl.data.phantom import CHEST_LABELS, ChestCohort
from kmedssl.data.phantom.writer import counted, prepare_layout
from kmedssl.data.records import FRONTAL_VIEWS


def write_jsrt(out_dir, num_subjects=50, image_size=256, seed=0, progress=None):
    """Write the frontal views of ``ChestCohort(num_subjects, seed)`` as JSRT images with SCR masks.

    Args:
        out_dir: folder to write; created if needed, and it must be empty (``writer.refuse_non_empty``).
        num_subjects: number of simulated patients (positive integer).
        image_size: side of the raw images in pixels (even integer >= 16); masks have half this side.
        seed: non-negative integer seed of the cohort.
        progress: as for ``writer.write_mimic_cxr``.

    Returns:
        ``pathlib.Path`` of ``out_dir``, readable with ``kmedssl.data.formats.jsrt.read_jsrt``.

    Raises:
        FileExistsError: ``out_dir`` is a file or a folder that is not empty.
    """
    if isinstance(image_size, (int, np.integer)) and image_size % 2:
        raise ValueError(f"Expected image_size to be an even integer >= 16. Received: image_size={image_size!r}")
    out, size = prepare_layout(out_dir, image_size, minimum=16)
    cohort = ChestCohort(num_subjects=num_subjects, seed=seed)
    for folder in ["images"] + [f"masks/{name}" for name in SCR_FOLDERS]:
        (out / folder).mkdir(parents=True, exist_ok=True)
    counts = {"JPCLN": 0, "JPCNN": 0}
    nodule = CHEST_LABELS.index("nodule")
    for record in counted([r for r in cohort.records if r.view in FRONTAL_VIEWS], progress):
        prefix = "JPCLN" if record.labels[nodule] == 1.0 else "JPCNN"
        counts[prefix] += 1
        name = f"{prefix}{counts[prefix]:03d}"
        write_raw(out / "images" / f"{name}.IMG", cohort.render(record, image_size=size))
        truth = cohort.ground_truth(record, size // 2)
        for folder, structure in SCR_FOLDERS.items():
            pixels = truth.masks[structure].astype(np.uint8) * 255
            Image.fromarray(pixels).save(out / "masks" / folder / f"{name}.gif", format="GIF")
    return out
