"""What every on-disk reader shares: the ``Dataset`` it returns and the raise-or-skip error policy."""

import dataclasses
import pathlib
import typing

from kmedssl.data.errors import DataError

ON_ERROR = ("raise", "skip")


@dataclasses.dataclass
class Dataset:
    """The records of one data source read from disk.

    Attributes:
        format: reader name, e.g. ``"mimic-cxr"``.
        root: the path that was read.
        records: every readable ``ImageRecord`` (``path`` set to the image file).
        label_names: names of the label columns of ``record.labels``.
        splits: ``{subject_id: "train" | "val" | "test"}`` from an official split file, or None.
        skipped: ``(file, problem)`` of every item left out under ``on_error="skip"``.
        loader: ``loader(record) -> (H, W) float32 in [0, 1]``; None means ``read_image(record.path)``.
    """

    format: str
    root: pathlib.Path
    records: list
    label_names: tuple = ()
    splits: typing.Optional[dict] = None
    skipped: list = dataclasses.field(default_factory=list)
    loader: typing.Optional[typing.Callable] = None


class ErrorPolicy:
    """Raise ``DataError`` for a bad item (``on_error="raise"``) or skip it and count it (``"skip"``)."""

    def __init__(self, on_error="raise"):
        if on_error not in ON_ERROR:
            raise ValueError(f"Expected on_error in {ON_ERROR}. Received: on_error={on_error!r}")
        self.on_error = on_error
        self.skipped = []

    def problem(self, file, message):
        """Report that ``file`` has ``message`` wrong: raises, or records the skip."""
        if self.on_error == "raise":
            raise DataError(f"{file}: {message}")
        self.skipped.append((str(file), message))
