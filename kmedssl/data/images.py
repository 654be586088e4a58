"""Decoding image files to grey-scale float arrays and the preprocessing of paper 000 §2.

``read_image(path)`` turns a PNG/JPEG/TIFF/BMP file (8- or 16-bit, grey, RGB or RGBA) into an (H, W)
float32 array in [0, 1]; ``preprocess(image, size)`` centre-crops it to a square and resizes it.
Unreadable input raises ``DataError`` naming the file and the problem.
"""

import pathlib

import numpy as np
from PIL import Image, UnidentifiedImageError

from kmedssl.data.errors import DataError

# ITU-R BT.601 luma, as PIL's "L" conversion.
LUMA = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)


def to_unit_grey(array, path="<array>"):
    """An image array (H, W), (H, W, 3) or (H, W, 4) of any integer or float type -> (H, W) float32 in [0, 1].

    Integers are scaled by their type's maximum (8-bit: 255, 16-bit: 65535); 16-bit data stored in fewer
    bits is *not* stretched (a dark image stays dark). Floats are assumed to be in [0, 1] already. RGB(A)
    becomes luma; alpha is dropped.
    """
    array = np.asarray(array)
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
    """Decode one image file to (H, W) float32 in [0, 1].

    Raises:
        DataError: missing, empty, truncated, corrupt or unsupported file (the message names it).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L"):
                array = np.asarray(image, dtype=np.uint16)
            elif image.mode == "I":
                array = np.asarray(image, dtype=np.int64)
                array = np.clip(array, 0, 65535).astype(np.uint16)
            elif image.mode in ("L", "RGB", "RGBA", "LA", "P", "1", "CMYK", "YCbCr", "F"):
                converted = image.convert("RGBA" if image.mode in ("P", "LA") else image.mode)
                if converted.mode == "LA":
                    converted = converted.convert("L")
                if converted.mode in ("CMYK", "YCbCr"):
                    converted = converted.convert("RGB")
                array = np.asarray(converted)
            else:
                raise DataError(f"{path}: unsupported image mode {image.mode!r}")
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: unreadable or corrupt image ({error})") from None
    return to_unit_grey(array, path)


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
