"""Health checks of an on-disk data set (``kmedssl data check``): everything wrong with it, in one report.

``check_dataset(path, format=None)`` reads ``path`` with its reader under ``on_error="skip"`` (so that one
bad row does not hide the others), then checks every record; ``health_report(dataset)`` runs the same
checks on a ``Dataset`` already read. Each problem is one ``Finding(file, category, level, message)``;
messages name files and studies, never subjects (patients). A report is ``ok`` when it holds no
error-level finding.

Categories (level), in report order:
    unreadable    (error)    the image does not decode (missing, empty, truncated or corrupt file), or the
                             reader left it out as unreadable.
    missing-file  (error)    reader skip: a table row names a file that does not exist.
    label         (error)    reader skip: a label value outside the known set (1.0, 0.0, -1.0, blank) or a
                             study without its labels row.
    view          (error)    reader skip: an unknown view code.
    leakage       (error)    a subject in more than one split of the provided split file (reader skip), or
                             the same image content under two different subjects.
    split         (error)    reader skip: any other split-file problem (unknown split name, no split row).
    skipped       (error)    any other item the reader left out, with the reader's problem text.
    dimensions    (error)    shortest side < ``min_side`` px, or longest / shortest side > ``max_aspect``; or
                             more pixels than the image gate's ``MAX_PIXELS`` (a decompression bomb).
    bit-depth     (error)    a 1-bit image, an image whose bit depth differs from the one most images have, or
                             a PIL mode the image gate does not read.
    pixel-values  (error)    NaN or Inf pixel values (the image gate refuses the image).
    channels      (error)    an alpha channel (``read_image`` drops it, so transparent pixels read as
                             whatever colour they store); (warning) colour or palette image (read as luma).
    duplicate     (warning)  the same image content as an earlier image of the same subject.
    missing-view  (warning)  a radiograph study (views PA/AP/LATERAL/LL) with no frontal or no lateral
                             image; one data-set-wide finding instead when no study has that view.

An image refused by the image gate of ``kmedssl.data.images`` when it is decoded is a finding of the
category of its problem (``GATE_RULES``: dimensions, bit-depth or pixel-values); any other decoding error
is unreadable.

Every reader skip is an error-level finding (an item of the data set was left out). Its category comes
from its problem text: paths under the data set's root are removed, the rest is lower-cased, and the first
rule of ``GATE_RULES + SKIP_RULES`` whose keyword it contains decides; no rule matches -> skipped. Subject
(patient) ids quoted in a problem text ("subject 10000032", "Patient ID '7'") are replaced by ``<subject>``; file
paths are reported as the reader gives them (MIMIC-CXR paths contain the subject folder).

Content identity: for data sets of image files (``Dataset.loader`` is None) the SHA-256 of the file bytes;
for sources decoded by a custom loader (MedMNIST arrays, DICOM) the SHA-256 of the decoded pixels and shape.
Bit depth and channels are read from the PIL mode of image files (``images.MODE_BITS``: "1": 1 bit; "L",
"P", "RGB", "RGBA", "LA": 8 bits; "I;16*": 16 bits; "I", "F": 32 bits); custom-loader sources skip those
two checks.
"""

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import pathlib
import re

import numpy as np
from PIL import Image

from kmedssl.data.errors import DataError
from kmedssl.data.formats import read_dataset
from kmedssl.data.images import MODE_BITS, read_image
from kmedssl.data.records import FRONTAL_VIEWS, LATERAL_VIEWS

CATEGORIES = ("unreadable", "missing-file", "label", "view", "leakage", "split", "skipped", "dimensions",
              "bit-depth", "pixel-values", "channels", "duplicate", "missing-view")
MIN_SIDE = 28  # the smallest published medical benchmark size (MedMNIST, 28 x 28)
MAX_ASPECT = 4.0
TEXT_FINDINGS_PER_CATEGORY = 20

# (category, keywords) of the image gate's problems (kmedssl.data.images), tried on the error of an image
# that does not decode (no match: unreadable) and before SKIP_RULES on a reader skip.
GATE_RULES = (
    ("dimensions", ("decompression bomb",)),
    ("pixel-values", ("non-finite",)),
    ("bit-depth", ("unsupported image mode",)),
)
# (category, keywords) in the order they are tried on a reader skip's problem text.
SKIP_RULES = (
    ("leakage", ("leakage", "more than one split")),
    ("missing-file", ("not found", "no such file", "does not exist")),
    ("unreadable", ("0 bytes", "empty", "unreadable", "corrupt", "truncated", "cannot be read", "no pixel data",
                    "not a dicom file")),
    ("split", ("split",)),
    ("label", ("label",)),
    ("view", ("view", "frontal/lateral", "ap/pa")),
)
# A subject (patient) id quoted in a reader's problem text: "subject 123", "subject_id '1x'", "Patient ID 7".
SUBJECT_ID = re.compile(r"(?i)\b(subject(?:_id)?|patient id)\s+('[^']*'|\"[^\"]*\"|[^\s,;:()]+)")
ALPHA_MODES = ("RGBA", "LA", "PA")
COLOUR_MODES = ("RGB", "P", "CMYK", "YCbCr")


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem: the ``file`` it is in, its ``category`` and ``level`` and a one-line ``message``."""

    file: str
    category: str
    level: str
    message: str


@dataclasses.dataclass
class HealthReport:
    """The result of ``check_dataset``.

    Attributes:
        format: reader name, e.g. ``"mimic-cxr"``.
        root: the path that was checked.
        num_records: records the reader returned (each one decoded and checked).
        num_skipped: items the reader left out (each one is also a finding).
        findings: every ``Finding``, sorted by category (``CATEGORIES`` order), then file.
    """

    format: str
    root: str
    num_records: int
    num_skipped: int
    findings: list

    @property
    def counts(self):
        """``{category: number of findings}`` for every category (zeros included), in report order."""
        counts = collections.Counter(finding.category for finding in self.findings)
        return {category: counts[category] for category in CATEGORIES}

    @property
    def num_errors(self):
        return sum(finding.level == "error" for finding in self.findings)

    @property
    def num_warnings(self):
        return sum(finding.level == "warning" for finding in self.findings)

    @property
    def ok(self):
        """False when any finding is an error (warnings alone keep the data set ok)."""
        return self.num_errors == 0

    def to_dict(self):
        return {
            "format": self.format,
            "root": self.root,
            "ok": self.ok,
            "num_records": self.num_records,
            "num_skipped": self.num_skipped,
            "num_errors": self.num_errors,
            "num_warnings": self.num_warnings,
            "counts": self.counts,
            "findings": [dataclasses.asdict(finding) for finding in self.findings],
        }

    def to_json(self):
        """The report as a JSON document (str)."""
        return json.dumps(self.to_dict(), indent=2)

    def to_text(self, per_category=TEXT_FINDINGS_PER_CATEGORY):
        """A human-readable report: counts per category, then up to ``per_category`` findings of each."""
        lines = [
            f"Data set: {self.root} (format {self.format})",
            f"{self.num_records} images checked, {self.num_skipped} items skipped by the reader",
            "",
            f"{'category':<14} {'count':>6}",
        ]
        lines += [f"{category:<14} {count:>6}" for category, count in self.counts.items()]
        by_category = collections.defaultdict(list)
        for finding in self.findings:
            by_category[finding.category].append(finding)
        for category, findings in by_category.items():
            lines += ["", f"{category}:"]
            lines += [f"  {finding.level:<7} {self._display(finding.file)}: {self._display(finding.message)}"
                      for finding in findings[:per_category]]
            if len(findings) > per_category:
                lines.append(f"  ... and {len(findings) - per_category} more (write them all with --json)")
        verdict = "OK" if self.ok else "NOT OK"
        lines += ["", f"Result: {verdict} ({self.num_errors} errors, {self.num_warnings} warnings)"]
        return "\n".join(lines)

    def _display(self, text):
        """``text`` with the paths under the checked root written relative to it."""
        prefix = re.escape(os.path.join(self.root, ""))
        return re.sub(rf"(?<![^\s'\"(]){prefix}", "", text)  # only where a path starts


def check_dataset(path, format=None, *, min_side=MIN_SIDE, max_aspect=MAX_ASPECT, workers=4, progress=None):
    """Read the data set at ``path`` (``format`` inferred when None) and check every record.

    Raises:
        DataError: the path cannot be read at all (no such path, format not inferable, a table missing).
    """
    dataset = read_dataset(path, format, on_error="skip")
    return health_report(dataset, min_side=min_side, max_aspect=max_aspect, workers=workers, progress=progress)


def health_report(dataset, *, min_side=MIN_SIDE, max_aspect=MAX_ASPECT, workers=4, progress=None):
    """Check every record of ``dataset`` (a ``kmedssl.data.formats.Dataset``) and return a ``HealthReport``.

    Args:
        dataset: the records, reader skips and loader of one data source.
        min_side: smallest accepted image side in pixels.
        max_aspect: largest accepted ratio of the longest to the shortest image side.
        workers: decoding threads for image files (PIL and hashlib release the GIL); a custom
            ``Dataset.loader`` is called from one thread.
        progress: optional ``progress(n)`` called with the number of records just checked.
    """
    if isinstance(min_side, bool) or not isinstance(min_side, int) or min_side < 1:
        raise ValueError(f"Expected min_side to be a positive integer. Received: min_side={min_side!r}")
    if not max_aspect >= 1.0:
        raise ValueError(f"Expected max_aspect >= 1. Received: max_aspect={max_aspect!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"Expected workers to be a positive integer. Received: workers={workers!r}")
    records = list(dataset.records)
    uses = collections.Counter(record.path for record in records)
    files = [_record_file(record, uses) for record in records]
    # A custom loader may cache state that is not thread-safe (MedMNIST loads a split on first use): one thread.
    threads = workers if dataset.loader is None else 1
    inspections = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        for inspection in pool.map(lambda job: _inspect(*job, dataset.loader), zip(records, files)):
            inspections.append(inspection)
            if progress is not None:
                progress(1)
    readable = [(record, found) for record, found in zip(records, inspections) if found.shape is not None]
    findings = (
        [_skip_finding(file, problem, dataset.root) for file, problem in dataset.skipped]
        + [Finding(found.file, _category(found.error, GATE_RULES, "unreadable"), "error", found.error)
           for found in inspections if found.error]
        + _dimension_findings(readable, min_side, max_aspect)
        + _mode_findings(readable)
        + _content_findings(readable)
        + _view_findings(records, files, dataset.root)
    )
    order = {category: rank for rank, category in enumerate(CATEGORIES)}
    findings.sort(key=lambda finding: (order[finding.category], finding.file))
    return HealthReport(format=dataset.format, root=str(dataset.root), num_records=len(records),
                        num_skipped=len(dataset.skipped), findings=findings)


# === Per-record inspection (runs in the thread pool) ===

@dataclasses.dataclass(frozen=True)
class _Inspection:
    file: str
    error: str = ""
    shape: tuple | None = None  # (H, W) of the decoded image
    mode: str = ""  # PIL mode of an image file; "" for custom-loader sources
    digest: str = ""


def _record_file(record, uses):
    """How findings name a record: its file, or "FILE[IMAGE_ID]" when the file holds several images (an .npz)."""
    if record.path is not None and uses[record.path] == 1:
        return str(record.path)
    return f"{record.path or ''}[{record.image_id}]"


def _inspect(record, file, loader):
    """Decode one record (named ``file`` in findings): its shape, PIL mode and content hash, or the error."""
    try:
        if loader is not None:
            image = np.ascontiguousarray(loader(record))
            digest = hashlib.sha256(repr(image.shape).encode() + image.tobytes()).hexdigest()
            return _Inspection(file, shape=tuple(image.shape[:2]), digest=digest)
        if record.path is None:
            return _Inspection(file, error="no image file and no loader")
        image = read_image(record.path)
        with Image.open(record.path) as header:
            mode = header.mode
        digest = hashlib.sha256(pathlib.Path(record.path).read_bytes()).hexdigest()
        return _Inspection(file, shape=tuple(image.shape[:2]), mode=mode, digest=digest)
    except (DataError, OSError) as error:
        return _Inspection(file, error=_strip_file(str(error), str(record.path)))


def _strip_file(message, file):
    """Drop the leading ``"FILE: "`` of a ``DataError`` message (the finding names the file already)."""
    prefix = f"{file}: "
    return message[len(prefix):] if message.startswith(prefix) else message


# === Checks over the whole data set ===

def _skip_finding(file, problem, root):
    """A reader skip as a finding, its category from the problem text without the paths under ``root``."""
    text = re.sub(re.escape(str(root)) + r"\S*", "", problem)
    category = _category(text, GATE_RULES + SKIP_RULES, "skipped")
    return Finding(str(file), category, "error", SUBJECT_ID.sub(r"\1 <subject>", problem))


def _category(text, rules, default):
    """The category of the first of ``rules`` with a keyword in ``text`` (case-insensitive), else ``default``."""
    text = text.lower()
    return next((category for category, keywords in rules if any(k in text for k in keywords)), default)


def _dimension_findings(readable, min_side, max_aspect):
    findings = []
    for _, found in readable:
        height, width = found.shape
        if min(height, width) < min_side:
            findings.append(Finding(found.file, "dimensions", "error",
                                    f"{width}x{height} px: a side is shorter than {min_side} px"))
        elif max(height, width) / min(height, width) > max_aspect:
            findings.append(Finding(found.file, "dimensions", "error",
                                    f"{width}x{height} px: aspect ratio above {max_aspect:g}"))
    return findings


def _mode_findings(readable):
    """Bit depth (1-bit, or not the most common depth) and alpha / colour channels of image files."""
    files = [found for _, found in readable if found.mode]
    depths = collections.Counter(MODE_BITS.get(found.mode) for found in files)
    depths.pop(None, None)
    # The most common depth; ties go to the deeper one.
    common = max(depths, key=lambda bits: (depths[bits], bits)) if depths else None
    findings = []
    for found in files:
        bits = MODE_BITS.get(found.mode)
        if bits == 1:
            findings.append(Finding(found.file, "bit-depth", "error", "1-bit (black and white) image"))
        elif bits is not None and bits != common:
            findings.append(Finding(found.file, "bit-depth", "error",
                                    f"{bits}-bit image among {common}-bit images "
                                    f"({depths[common]} of {sum(depths.values())} are {common}-bit)"))
        if found.mode in ALPHA_MODES:
            findings.append(Finding(found.file, "channels", "error",
                                    f"alpha channel (mode {found.mode}): it is dropped when reading"))
        elif found.mode in COLOUR_MODES:
            findings.append(Finding(found.file, "channels", "warning",
                                    f"colour image (mode {found.mode}): read as grey-scale luma"))
    return findings


def _content_findings(readable):
    """Identical content: ``leakage`` across subjects, ``duplicate`` within one subject."""
    first = {}
    findings = []
    for record, found in readable:
        if found.digest not in first:
            first[found.digest] = (record, found)
            continue
        original, original_found = first[found.digest]
        if original.subject_id != record.subject_id:
            findings.append(Finding(found.file, "leakage", "error",
                                    f"same image content as {original_found.file} under a different subject"))
        else:
            findings.append(Finding(found.file, "duplicate", "warning",
                                    f"same image content as {original_found.file}"))
    return findings


def _view_findings(records, files, root):
    """Radiograph studies without a frontal or a lateral image (one summary when a view is absent everywhere)."""
    studies = collections.defaultdict(list)
    for record, file in zip(records, files):
        if record.view in FRONTAL_VIEWS + LATERAL_VIEWS:
            studies[(record.subject_id, record.study_id)].append((record, file))
    if not studies:
        return []
    counts = {key: (sum(r.is_frontal for r, _ in group), sum(r.is_lateral for r, _ in group))
              for key, group in studies.items()}
    findings = []
    for index, name, codes in ((0, "frontal", FRONTAL_VIEWS), (1, "lateral", LATERAL_VIEWS)):
        lacking = [key for key, count in counts.items() if count[index] == 0]
        if len(lacking) == len(studies):
            findings.append(Finding(str(root), "missing-view", "warning",
                                    f"no {name} ({'/'.join(codes)}) image in any of the {len(studies)} "
                                    f"radiograph studies: frontal-lateral pairing yields nothing"))
            continue
        for key in lacking:
            group = studies[key]
            findings.append(Finding(group[0][1], "missing-view", "warning",
                                    f"study {key[1]} has no {name} ({'/'.join(codes)}) image "
                                    f"({len(group)} image(s) in the study)"))
    return findings


__all__ = ["CATEGORIES", "Finding", "HealthReport", "check_dataset", "health_report"]
