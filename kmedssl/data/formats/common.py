"""What every on-disk reader shares: the ``Dataset`` it returns, the raise-or-skip error policy and the data
root its files must lie in."""

import dataclasses
import errno
import os
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


class DataRoot:
    """The folder a data set's files must lie in: ``problem(path)`` says why ``path`` may not be read.

    A path is inside when it is, once ``..`` and every symbolic link are resolved, in the resolved folder:
    ``../x.png``, an absolute path elsewhere and a symlink that leads out are refused, and so is a path
    that cannot be resolved (a symlink loop). A missing file is not a problem here (the reader says so).
    """

    def __init__(self, folder):
        self.folder = pathlib.Path(folder)
        self.real = os.path.realpath(folder)

    def problem(self, path):
        """None when ``path`` is inside the data root, else the problem (without the path) as one line."""
        try:
            real = os.path.realpath(path, strict=True)
        except FileNotFoundError:  # a missing file or a dangling link: where it would be
            real = os.path.realpath(path)
        except OSError as error:
            reason = "a symlink loop" if error.errno == errno.ELOOP else error.strerror or str(error)
            return f"cannot be read ({reason})"
        if os.path.commonpath([self.real, real]) != self.real:
            return f"outside the data root {self.folder} (it leads to {real})"
        return None
