"""Reading ``.npz`` archives from untrusted files without letting a header decide how much memory is taken.

``numpy.load`` allocates the shape a member's ``.npy`` header declares before reading its data, so a forged
header of a few bytes can ask for any amount of memory. ``array_headers`` reads every header without loading
data; ``declared_size_problem`` says whether a declared array fits in the bytes its member stores.
"""

import math
import zipfile

import numpy as np

# What a damaged or foreign .npz raises while its headers are read.
ARCHIVE_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, KeyError)


def array_headers(path):
    """``{name: (shape, dtype, stored)}`` of every ``NAME.npy`` member of the archive at ``path``: the
    declared shape and dtype, and the bytes the member holds after its header. No array data is read.

    Raises:
        One of ``ARCHIVE_ERRORS``: not a zip, or a member that is not a ``.npy`` array.
    """
    headers = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            if not member.filename.endswith(".npy"):
                continue
            with archive.open(member) as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(handle)
                headers[member.filename[:-4]] = (shape, dtype, member.file_size - handle.tell())
    return headers


def declared_size_problem(name, shape, dtype, stored, limit=None):
    """Why array ``name`` may not be loaded (its declared bytes exceed what its member ``stored``, or ``limit``),
    or None. Object arrays are left to ``numpy.load(allow_pickle=False)``, which refuses them."""
    if dtype.hasobject:
        return None
    declared = math.prod(shape) * dtype.itemsize
    if declared > stored:
        return (f"{name!r} declares shape {shape} of {dtype} ({declared} bytes), but its member holds {stored} "
                f"bytes of data: a corrupt or forged header")
    if limit is not None and declared > limit:
        return f"{name!r} has shape {shape} of {dtype} ({declared} bytes), above the limit of {limit} bytes per array"
    return None
