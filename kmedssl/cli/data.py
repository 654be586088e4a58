"""``kmedssl data``: check the health of a data set on disk, or write the phantom in a real layout (SPEC §7).

Keras-free: nothing here imports Keras, so the commands start fast and need no backend.
"""

import pathlib
import sys

import click

from kmedssl.cli.common import CONTEXT_SETTINGS, run_user_command
from kmedssl.data.formats import FORMATS, read_dataset
from kmedssl.data.health import MIN_SIDE, health_report
from kmedssl.data.phantom.chestx_det_writer import write_chestx_det
from kmedssl.data.phantom.jsrt_writer import write_jsrt
from kmedssl.data.phantom.masks_writer import write_masks
from kmedssl.data.phantom.radimagenet_writer import write_radimagenet
from kmedssl.data.phantom.siim_writer import write_siim
from kmedssl.data.phantom.writer import write_mimic_cxr

LAYOUTS = ("mimic-cxr", "radimagenet", "masks", "siim", "jsrt", "chestx-det")
# Chest layouts whose size option is a number of subjects.
SUBJECT_WRITERS = {"mimic-cxr": write_mimic_cxr, "masks": write_masks, "siim": write_siim, "jsrt": write_jsrt,
                   "chestx-det": write_chestx_det}


@click.group(context_settings=CONTEXT_SETTINGS)
def data():
    """Data sets on disk: health checks, and the phantom written in a real layout.

    \b
    Example:
      kmedssl data phantom --out phantom-mimic --layout mimic-cxr --subjects 50
      kmedssl data check phantom-mimic --format mimic-cxr --json health.json
    """


@data.command()
@click.argument("path", type=click.Path())
@click.option("--format", "format_", metavar="FORMAT",
              help=f"One of {', '.join(FORMATS)} (default: inferred from what PATH contains).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Also write the full report (every finding) to this JSON file.")
@click.option("--min-side", type=int, default=MIN_SIDE, show_default=True,
              help="Smallest accepted image side in pixels.")
@click.option("--workers", type=int, default=4, show_default=True, help="Decoding threads.")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def check(path, format_, json_path, min_side, workers, debug):
    """Check the data set at PATH and print a health report.

    Decodes every image and reports unreadable/corrupt/truncated files, rows naming missing files or
    paths outside the data set, label values and view codes the reader rejects, wrong dimensions or bit
    depth, images above the pixel limit (decompression bombs), NaN/Inf pixels, alpha/colour channels,
    duplicate images, the same image under two subjects or a subject in two splits, and radiograph
    studies without a frontal or a lateral view. Exit code 0 when the data set has no error
    (warnings allowed), 1 otherwise. See docs/data-health.md.

    \b
    Example:
      kmedssl data check /data/mimic-cxr-jpg --format mimic-cxr --json health.json
    """
    report = run_user_command(debug, _check, path, format_, min_side, workers)
    click.echo(report.to_text())
    if json_path:
        run_user_command(debug, pathlib.Path(json_path).write_text, report.to_json() + "\n")
        click.echo(f"JSON report written to {json_path}")
    if not report.ok:
        sys.exit(1)


def _check(path, format_, min_side, workers):
    """Read PATH (skipping bad items, which become findings) and check it, with a progress bar on stderr."""
    dataset = read_dataset(path, format_, on_error="skip")
    with click.progressbar(length=len(dataset.records), label="Checking images", file=sys.stderr) as bar:
        return health_report(dataset, min_side=min_side, workers=workers, progress=bar.update)


@data.command()
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Output directory: new, or an empty folder.")
@click.option("--layout", type=click.Choice(LAYOUTS), default="mimic-cxr", show_default=True,
              help="On-disk layout to write.")
@click.option("--subjects", type=int,
              help="Number of subjects (chest layouts, default 50) or of images (radimagenet, default 200).")
@click.option("--image-size", type=int,
              help="Image side in pixels (default 256 for the chest layouts, 64 for radimagenet).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the phantom cohort.")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
def phantom(out, layout, subjects, image_size, seed, debug):
    """Write the phantom in a real layout: MIMIC-CXR-JPG, RadImageNet, images with masks, SIIM, JSRT, ChestX-Det.

    The files are read back by the real readers (``--format mimic-cxr`` or ``--format radimagenet``).
    ``--layout masks`` writes chest images (images/*.png), one mask folder per structure
    (masks/STRUCTURE/*.png), landmarks.csv and index.csv (read by ``--format masks``, inferred); see
    docs/data-phantom-dense.md. ``--layout siim|jsrt|chestx-det`` write the frontal chest views with their
    masks in the SIIM-ACR, JSRT/SCR and ChestX-Det layouts (docs/data-siim.md, data-jsrt.md,
    data-chestx-det.md). --out must be a new or empty folder: nothing already there is replaced.

    \b
    Example:
      kmedssl data phantom --out phantom-rin --layout radimagenet --subjects 300 --image-size 128
      kmedssl data phantom --out phantom-dense --layout masks --subjects 20 --image-size 128
      kmedssl data phantom --out phantom-siim --layout siim --subjects 20 --image-size 128
    """
    with ImageProgress("Writing images") as progress:
        run_user_command(debug, _write_phantom, out, layout, subjects, image_size, seed, progress)
    count = sum(1 for file in pathlib.Path(out).rglob("*") if file.is_file())
    click.echo(f"Wrote the {layout} phantom ({count} files) to {out}; check it with: kmedssl data check {out}")


class ImageProgress:
    """A writer's ``progress`` on stderr: ``progress(total)`` opens a click progress bar (with the time left),
    then ``progress(1)`` advances it."""

    def __init__(self, label):
        self.label, self.bar = label, None

    def __call__(self, count):
        if self.bar is None:
            self.bar = click.progressbar(length=count, label=self.label, file=sys.stderr, show_eta=True)
            self.bar.__enter__()
        else:
            self.bar.update(count)

    def __enter__(self):
        return self

    def __exit__(self, *error):
        if self.bar is not None:
            self.bar.__exit__(*error)


def _write_phantom(out, layout, subjects, image_size, seed, progress=None):
    """Call the layout's writer with the options given (the writer's defaults for the others)."""
    options = {"image_size": image_size, "seed": seed, "progress": progress}
    if layout in SUBJECT_WRITERS:
        options["num_subjects"] = subjects
        writer = SUBJECT_WRITERS[layout]
        return writer(pathlib.Path(out), **{k: v for k, v in options.items() if v is not None})
    options["num_images"] = subjects
    return write_radimagenet(pathlib.Path(out), **{k: v for k, v in options.items() if v is not None})
