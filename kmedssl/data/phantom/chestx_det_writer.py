"""Writing the chest phantom in the ChestX-Det layout: PNG images and findings outlined as JSON polygons.

``write_chestx_det(out_dir)`` renders the frontal views (PA, AP) of a ``ChestCohort`` and writes::

    out_dir/train/NNNNN.png, out_dir/test/NNNNN.png      8-bit grey PNG, numbered in record order
    out_dir/ChestX_Det_train.json, ChestX_Det_test.json  [{"file_name", "syms", "boxes", "polygons"}, ...]

Images of the seeded 80/10/10 subject split's ``test`` subjects go to ``test``, the others to ``train``.
Each finding the study has is outlined from the phantom's ground truth of that image (``SYMS``: finding
-> mask; cardiomegaly is outlined by the heart), one polygon per 4-connected region of the mask, traced
along pixel edges by ``kmedssl.data.formats.polygons.trace_polygons``: filled by the reader's rule (even-odd
at pixel centres) a polygon gives its region back **exactly**, except that a hole inside a region is
filled (the polygons approximate the mask only there). A finding whose mask is empty at this size (a
sub-pixel nodule) gets no polygon. ``boxes`` are the polygons' bounding boxes ``[x1, y1, x2, y2]`` (pixel
corners). Nothing identifies a patient. The output is a function of the arguments alone.
"""

import json

import numpy as np
from PIL import Image

from kmedssl.data.formats.chestx_det import json_name
from kmedssl.data.formats.polygons import trace_polygons
from kmedssl.data.phantom import CHEST_LABELS, ChestCohort
from kmedssl.data.phantom.writer import counted, prepare_layout
from kmedssl.data.records import FRONTAL_VIEWS
from kmedssl.data.splits import subject_split

# ChestX-Det category -> (phantom label, ground-truth mask)
SYMS = {"Atelectasis": ("atelectasis", "atelectasis"), "Cardiomegaly": ("cardiomegaly", "heart"),
        "Consolidation": ("consolidation", "consolidation"), "Effusion": ("effusion", "effusion"),
        "Nodule": ("nodule", "nodule"), "Pneumothorax": ("pneumothorax", "pneumothorax_visible")}


def write_chestx_det(out_dir, num_subjects=50, image_size=256, seed=0, progress=None):
    """Write the frontal views of ``ChestCohort(num_subjects, seed)`` in the ChestX-Det layout.

    Args:
        out_dir: folder to write; created if needed, and it must be empty (``writer.refuse_non_empty``).
        num_subjects: number of simulated patients (positive integer).
        image_size: side of the square images in pixels (integer >= 8).
        seed: non-negative integer seed of the cohort and the split.
        progress: as for ``writer.write_mimic_cxr``.

    Returns:
        ``pathlib.Path`` of ``out_dir``, readable with ``kmedssl.data.formats.chestx_det.read_chestx_det``.

    Raises:
        FileExistsError: ``out_dir`` is a file or a folder that is not empty.
    """
    out, size = prepare_layout(out_dir, image_size)
    cohort = ChestCohort(num_subjects=num_subjects, seed=seed)
    test = {r.image_id for r in subject_split(cohort.records, seed=cohort.seed)["test"]}
    tables = {"train": [], "test": []}
    for split in tables:
        (out / split).mkdir(parents=True, exist_ok=True)
    frontal = [record for record in cohort.records if record.view in FRONTAL_VIEWS]
    for n, record in enumerate(counted(frontal, progress)):
        split = "test" if record.image_id in test else "train"
        name = f"{n:05d}.png"
        pixels = np.round(cohort.render(record, image_size=size) * 255.0).astype(np.uint8)
        Image.fromarray(pixels).save(out / split / name, format="PNG")
        tables[split].append(_entry(name, record, cohort.ground_truth(record, size).masks))
    for split, entries in tables.items():
        with open(out / json_name(split), "w", encoding="utf-8") as handle:
            json.dump(entries, handle)
            handle.write("\n")
    return out


def _entry(name, record, masks):
    syms, boxes, polygons = [], [], []
    for sym, (label, structure) in SYMS.items():
        if record.labels[CHEST_LABELS.index(label)] != 1.0:
            continue
        for ring in trace_polygons(masks[structure]):
            xs, ys = [x for x, _ in ring], [y for _, y in ring]
            syms.append(sym)
            boxes.append([min(xs), min(ys), max(xs), max(ys)])
            polygons.append(ring)
    return {"file_name": name, "syms": syms, "boxes": boxes, "polygons": polygons}
