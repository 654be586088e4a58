"""Image formation for the phantom: radiographs (Beer–Lambert), CT, MR and ultrasound slices.

Every function takes a compiled scene and a ``numpy.random.Generator`` that the caller derives from the
record's ids, so an image is a pure function of (seed, ids, size). Outputs are float32 in [0, 1].
"""

import functools

import numpy as np

from kmedssl.data import phantom_geometry as geo
from kmedssl.data import phantom_scene as scene_lib
from kmedssl.data import phantom_tissues as tissues


@functools.lru_cache(maxsize=64)
def _blur_matrix(n, sigma):
    """(n, n) Gaussian smoothing matrix with reflected borders (rows sum to 1)."""
    x = np.arange(n)
    radius = int(np.ceil(3 * sigma)) + 1
    taps = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    mat = np.zeros((n, n))
    for t, k in zip(taps, kernel):
        idx = x + t
        idx = np.where(idx < 0, -idx - 1, idx)
        idx = np.where(idx >= n, 2 * n - idx - 1, idx)
        np.add.at(mat, (x, np.clip(idx, 0, n - 1)), k)
    return mat


def blur(img, sigma):
    """Separable Gaussian blur of a 2-D image; ``sigma`` in pixels (no-op below 0.05)."""
    if sigma < 0.05:
        return img
    rows = _blur_matrix(img.shape[0], round(float(sigma), 3))
    cols = _blur_matrix(img.shape[1], round(float(sigma), 3))
    return rows @ img @ cols.T


def _window(img, lo, hi):
    return np.clip((img - lo) / max(hi - lo, 1e-9), 0.0, 1.0)


# === Radiographs ===


def projection_geometry(beam, isocenter, detector_distance, sid, u, v, fov, rng, jitter=1.0):
    """Cone-beam geometry around a patient (rotated slightly, per image, by ``jitter`` times a few degrees).

    Args:
        beam: (3,) unit vector from source to detector; u, v: detector column / row directions.
        isocenter: (3,) point the beam is centred on; detector_distance: isocenter -> detector (cm).
        sid: source-to-detector distance (cm); a short SID magnifies structures far from the detector.
        fov: detector field of view (cm).

    Returns:
        dict with source, origin (detector centre), u, v (unit vectors) and fov.
    """
    rot = geo.rotation(*(rng.normal(0.0, [0.05, 0.025, 0.025]) * jitter))
    iso = np.asarray(isocenter, float) + rng.normal(0.0, 1.0, 3) * jitter * np.array([1.0, 1.0, 1.5])
    beam, u, v = (rot @ np.asarray(x, float) for x in (beam, u, v))
    origin = iso + beam * detector_distance
    return {"source": origin - beam * sid, "origin": origin, "u": u, "v": v, "fov": fov}


def radiograph(scenes, geometry, size, rng, flux=2e5, scatter=(0.005, 0.04), compression=(0.3, 0.7),
               unsharp=(0.0, 0.6)):
    """A processed digital radiograph of the volume made of ``scenes`` (a list of compiled scenes).

    Physics: primary I = exp(-∫ mu dl) along each source-pixel ray (Beer–Lambert), times a heel-effect
    ramp; plus scatter, a broad blur of I scaled by a scatter fraction; quantum noise with variance I / N0
    (N0 = flux * pixel area); then the log image L = -log(I) and a small detector blur. Processing as on
    clinical systems: dynamic-range compression (subtract a fraction of a 5 cm blur of L), a percentile
    window, a gamma, and unsharp-mask edge enhancement. The ranges are drawn per image from ``rng``.
    """
    pixel = geometry["fov"] / size
    line = scene_lib.line_integrals(scenes, tissues.column("xr"), geometry["source"], geometry["origin"],
                                    geometry["u"], geometry["v"], (size, size), pixel)
    ramp = 1.0 + rng.uniform(-0.08, 0.08) * np.linspace(-1.0, 1.0, size)[:, None]
    primary = np.exp(-np.clip(line, 0.0, None)) * ramp
    total = primary + rng.uniform(*scatter) * blur(primary, 6.0 / pixel)
    n0 = flux * rng.uniform(0.5, 2.0) * pixel**2
    noisy = total + np.sqrt(total / n0) * rng.standard_normal(total.shape)
    log_img = blur(-np.log(np.clip(noisy, 1e-5, None)), 0.05 / pixel)
    body = log_img > 0.3
    log_img = log_img - rng.uniform(*compression) * blur(log_img, 5.0 / pixel)
    lo, hi = np.percentile(log_img[body], [0.5, 99.8]) if body.any() else (log_img.min(), log_img.max())
    img = _window(log_img, lo, hi) ** rng.uniform(0.8, 1.25)
    img = img + rng.uniform(*unsharp) * (img - blur(img, 1.5 / pixel))
    return np.clip(img, 0.0, 1.0).astype(np.float32)
