"""The run-length encoding of the SIIM-ACR Pneumothorax Segmentation challenge (2019), both directions.

The challenge's ``train-rle.csv`` stores a mask as ``"start length start length ..."`` over the image read
**column by column** (the image transposed, then flattened: flat position ``p`` is row ``p % height``,
column ``p // height``), and every start is **relative**: the number of background pixels between the end
of the previous run (or the first pixel, for the first run) and the start of this run. ``"-1"`` means an
empty mask (no pneumothorax). Example, a 4 x 4 mask (column-major positions 0..15)::

    [[0 0 0 0]
     [1 0 0 1]        column 0 holds positions 0-3, column 1 positions 4-7, ...
     [1 0 0 1]        runs: positions 1-2 and 13-14
     [0 0 0 0]]       -> "1 2 10 2"  (1 background pixel, 2 mask, 10 background, 2 mask)

This is the encoding the challenge's published sample code (``mask_functions.py``) decodes and the form
its overview describes ("pixel locations are measured from the end of the previous run"). The *absolute*
form used by other Kaggle challenges (each start counted from the first pixel) is **not** accepted: a
string of increasing starts is valid in both forms, so the two cannot be told apart from the text.

A run that reaches the last pixel is written here (the challenge's sample encoder forgot the last run of
an image that ends inside the mask; its decoder reads such a run correctly).
"""

import re

import numpy as np

EMPTY = "-1"
_INTEGER = re.compile(r"^[0-9]+$")


def encode_rle(mask):
    """A boolean ``(height, width)`` mask -> the challenge's relative, column-major RLE string ("-1" if empty).

    Input: mask (H, W), any dtype (non-zero = inside). Output: "s1 l1 s2 l2 ..." with s relative.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"Expected a 2-D mask. Received: mask with shape {mask.shape}")
    flat = np.concatenate([[False], mask.T.ravel() != 0, [False]])  # column-major, padded with background
    edges = np.flatnonzero(flat[1:] != flat[:-1])  # run starts (even entries) and ends (odd), absolute
    if edges.size == 0:
        return EMPTY
    starts, ends = edges[0::2], edges[1::2]
    previous_end = np.concatenate([[0], ends[:-1]])
    values = np.stack([starts - previous_end, ends - starts], axis=1).ravel()
    return " ".join(str(int(v)) for v in values)


def decode_rle(text, height, width):
    """The challenge's relative, column-major RLE string -> boolean ``(height, width)`` mask.

    Raises:
        ValueError: a blank string, a value that is not a non-negative integer, an odd number of values, a
            run of length 0, or a run past the last pixel (the message says which value, never the file;
            the readers add it).
    """
    text = str(text).strip()
    if text == EMPTY:
        return np.zeros((height, width), dtype=bool)
    tokens = text.split()
    if not tokens:
        raise ValueError("blank EncodedPixels (expected -1 or 'start length' pairs)")
    bad = next((i for i, token in enumerate(tokens) if not _INTEGER.match(token)), None)
    if bad is not None:
        raise ValueError(f"value {bad + 1} ({tokens[bad][:20]!r}) is not a non-negative integer")
    if len(tokens) % 2:
        raise ValueError(f"odd number of values ({len(tokens)}): expected 'start length' pairs")
    values = np.asarray([int(token) for token in tokens], dtype=np.int64).reshape(-1, 2)
    starts, lengths = values[:, 0], values[:, 1]
    if (lengths == 0).any():
        raise ValueError(f"run {int(np.argmax(lengths == 0)) + 1} has length 0")
    ends = np.cumsum(starts + lengths)  # absolute end (exclusive) of each run
    begins = ends - lengths
    size = height * width
    if ends[-1] > size:
        run = int(np.argmax(ends > size))
        raise ValueError(f"run {run + 1} ends at pixel {int(ends[run])}, past the last pixel of the "
                         f"{height}x{width} image ({size} pixels)")
    flat = np.zeros(size + 1, dtype=np.int32)
    np.add.at(flat, begins, 1)
    np.add.at(flat, ends, -1)
    return np.cumsum(flat[:-1]).astype(bool).reshape(width, height).T
