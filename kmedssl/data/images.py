"""Decoding image files to grey-scale float arrays, the image gate, and the preprocessing of paper 000 §2.

``read_image(path)`` turns a PNG/JPEG/TIFF/BMP file (8- or 16-bit, grey, RGB or RGBA) into an (H, W)
float32 array in [0, 1]; ``preprocess(image, size)`` centre-crops it to a square and resizes it.
Unreadable input raises ``DataError`` naming the file and the problem.

The image gate: every reader of pixels (``read_image``, the DICOM and MedMNIST loaders) and
``kmedssl data check`` pass through the same checks, each a ``DataError`` naming the file (so a counted
skip under ``on_error="skip"``):

- ``check_pixel_count``: at most ``MAX_PIXELS`` pixels, on the size the header declares, before decoding
  (PIL's own decompression-bomb error is reported the same way);
- ``MODE_BITS``: the PIL modes (bit depths) that are read; any other mode is refused before decoding;
- ``check_finite``: no NaN or Inf value in a decoded image.
"""

import pathlib
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from kmedssl.data.errors import DataError

# ITU-R BT.601 luma, as PIL's "L" conversion.
LUMA = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
# 134 million pixels (11585 x 11585): a 10000 x 10000 radiograph passes, PIL's decompression-bomb error
# (above 179 million pixels) never fires below it. Its float32 grey image takes 512 MiB.
MAX_PIXELS = 2**27
# Bits per sample of each PIL mode ``read_image`` decodes; files in any other mode are refused.
MODE_BITS = {"1": 1, "L": 8, "P": 8, "LA": 8, "PA": 8, "RGB": 8, "RGBA": 8, "CMYK": 8, "YCbCr": 8,
             "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}
# PIL warns from 89 million pixels on; MAX_PIXELS is the limit that applies here.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


# === The image gate ===


def check_pixel_count(file, width, height):
    """Refuse an image that declares more than ``MAX_PIXELS`` pixels (checked before decoding it).

    Raises:
        DataError: naming ``file``, its size and the limit.
    """
    pixels = int(width) * int(height)
    if pixels > MAX_PIXELS:
        raise DataError(f"{file}: {width}x{height} px ({pixels} pixels) is above the limit of {MAX_PIXELS} "
                        f"pixels (a decompression bomb, or an image too large to decode)")


def check_finite(array, file):
    """Refuse a decoded image holding NaN or Inf values.

    Raises:
        DataError: naming ``file`` and the number of non-finite pixels.
    """
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.inexact):
        return
    finite = np.isfinite(array)
    if array.ndim == 3:  # (H, W, channels): a pixel is bad when any channel is
        finite = finite.all(axis=-1)
    bad = finite.size - int(np.count_nonzero(finite))
    if bad:
        raise DataError(f"{file}: {bad} of {finite.size} pixels are non-finite (NaN or Inf)")


def to_unit_grey(array, path="<array>"):
    """An image array (H, W), (H, W, 3) or (H, W, 4) of any integer or float type -> (H, W) float32 in [0, 1].

    Integers are scaled by their type's maximum (8-bit: 255, 16-bit: 65535); 16-bit data stored in fewer
    bits is *not* stretched (a dark image stays dark). Floats are assumed to be in [0, 1] already; NaN or
    Inf values raise ``DataError`` (``check_finite``). RGB(A) becomes luma; alpha is dropped.
    """
    array = np.asarray(array)
    check_finite(array, path)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        rgb = array[..., :3]
        grey = rgb.astype(np.float32) @ LUMA
        array = grey if not np.issubdtype(array.dtype, np.integer) else grey / np.iinfo(array.dtype).max
        return np.clip(array, 0.0, 1.0).astype(np.float32)
    if array.ndim != 2:
        raise DataError(f"{path}: expected a 2-D grey-scale or RGB(A) image, got an array of shape {array.shape}")
    if np.issubdtype(array.dtype, np.integer):
        return (array.astype(np.float32) / np.iinfo(array.dtype).max).astype(np.float32)
    if np.issubdtype(array.dtype, np.bool_):
        return array.astype(np.float32)
    return np.clip(array.astype(np.float32), 0.0, 1.0)


def read_image(path):
    """Decode one image file to (H, W) float32 in [0, 1], through the image gate.

    Raises:
        DataError: missing, empty, truncated, corrupt or unsupported file, more than ``MAX_PIXELS`` pixels,
            NaN or Inf pixels (the message names the file).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            if image.mode not in MODE_BITS:
                raise DataError(f"{path}: unsupported image mode {image.mode!r} (read: 1-, 8-, 16- and 32-bit "
                                f"grey, palette, RGB(A), CMYK and YCbCr)")
            check_pixel_count(path, *image.size)
            image.load()
            array = _pixels(image)
    except DataError:
        raise
    except Image.DecompressionBombError as error:
        raise DataError(f"{path}: above the limit of {MAX_PIXELS} pixels (a decompression bomb: PIL refuses "
                        f"its declared size)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: unreadable or corrupt image ({error})") from None
    return to_unit_grey(array, path)


def _pixels(image):
    """The decoded pixels of a PIL image of a ``MODE_BITS`` mode: uint16 (16/32-bit integer modes), or the
    array of its L, RGB, RGBA, 1 or F conversion."""
    if MODE_BITS[image.mode] == 16:
        return np.asarray(image, dtype=np.uint16)
    if image.mode == "I":
        return np.clip(np.asarray(image, dtype=np.int64), 0, 65535).astype(np.uint16)
    converted = image.convert("RGBA" if image.mode in ("P", "PA", "LA") else image.mode)
    if converted.mode in ("CMYK", "YCbCr"):
        converted = converted.convert("RGB")
    return np.asarray(converted)


def preprocess(image, size):
    """Centre crop to a square, then resize to (size, size) (paper 000 §2); float32 in [0, 1]."""
    image = np.asarray(image, dtype=np.float32)
    height, width = image.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = image[top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(square)
    resample = Image.Resampling.BOX if side > size else Image.Resampling.BILINEAR
    resized = Image.fromarray(square).resize((size, size), resample=resample)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
