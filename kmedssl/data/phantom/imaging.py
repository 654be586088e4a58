"""Image formation for the phantom: radiographs (Beer–Lambert), CT, MR and ultrasound slices.

Every function takes compiled scenes (``scene``) and a ``numpy.random.Generator`` that the caller
derives from the record's ids, so an image is a pure function of (seed, ids, size). Outputs are float32
in [0, 1].
"""

import functools

import numpy as np

from kmedssl.data.phantom import geometry as geo
from kmedssl.data.phantom import scene as scene_lib
from kmedssl.data.phantom import tissues as tissues


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
    """Separable Gaussian blur of a 2-D image; ``sigma`` in pixels, rounded to 2 significant digits so
    the cached blur matrices are reused (no-op below 0.05)."""
    if sigma < 0.05:
        return img
    sigma = float(f"{sigma:.2g}")
    return _blur_matrix(img.shape[0], sigma) @ img @ _blur_matrix(img.shape[1], sigma).T


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
               window=(0.5, 99.8), gamma=(0.8, 1.25), unsharp=(0.0, 0.6)):
    """A processed digital radiograph of the volume made of ``scenes`` (a list of compiled scenes).

    Physics: primary I = exp(-∫ mu dl) along each source-pixel ray (Beer–Lambert), times a heel-effect
    ramp; plus scatter, a broad blur of I scaled by a scatter fraction; quantum noise with variance I / N0
    (N0 = flux * pixel area); then the log image L = -log(I) and a small detector blur. Processing as on
    clinical systems: dynamic-range compression (subtract a fraction of a 5 cm blur of L), a window between
    two percentiles of the body's pixels, a gamma, and unsharp-mask edge enhancement. Ranges are drawn per
    image from ``rng``.
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
    lo, hi = np.percentile(log_img[body] if body.any() else log_img, window)
    img = _window(log_img, lo, hi) ** rng.uniform(*gamma)
    img = img + rng.uniform(*unsharp) * (img - blur(img, 1.5 / pixel))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


# === Slices ===

AXES = {  # slice orientation -> (u: increasing column, v: increasing row), radiological display
    "AXIAL": ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    "CORONAL": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "SAGITTAL": ((0.0, -1.0, 0.0), (0.0, 0.0, -1.0)),
}


def ct_image(scenes, plane, size, rng, window, noise_hu=(4.0, 12.0)):
    """A CT slice: Hounsfield units on the plane, a reconstruction blur, correlated noise (standard deviation
    drawn from ``noise_hu``), a (level, width) window mapped to [0, 1]."""
    pixel = plane["fov"] / size
    hu = scene_lib.sample_plane(scenes, tissues.column("ct")[:, None], plane["origin"], plane["u"], plane["v"],
                                (size, size), pixel)[..., 0]
    hu = blur(hu, 0.04 / pixel)
    noise = blur(rng.standard_normal((size, size)), 0.05 / pixel)
    noise *= rng.uniform(*noise_hu) / max(noise.std(), 1e-9)
    level, width = window
    return _window(hu + noise, level - width / 2, level + width / 2).astype(np.float32)


def mr_image(scenes, plane, size, rng, sequence):
    """An MR slice of a T1- or T2-weighted ``sequence``: tissue signal, a smooth multiplicative coil bias
    field, Rician noise (magnitude of complex Gaussian noise), normalised by its 99.5th percentile."""
    pixel = plane["fov"] / size
    signal = scene_lib.sample_plane(scenes, tissues.column(sequence)[:, None], plane["origin"], plane["u"],
                                    plane["v"], (size, size), pixel)[..., 0]
    grid = np.linspace(-1.0, 1.0, size)
    coef = rng.normal(0.0, 0.25, 5)
    bias = np.exp(coef[0] * grid[:, None] + coef[1] * grid[None] + coef[2] * grid[:, None] ** 2
                  + coef[3] * grid[None] ** 2 + coef[4] * grid[:, None] * grid[None])
    signal = blur(np.clip(signal, 0.0, None) * bias, 0.04 / pixel)
    sigma = rng.uniform(0.01, 0.04)
    noisy = np.hypot(signal + sigma * rng.standard_normal(signal.shape), sigma * rng.standard_normal(signal.shape))
    return np.clip(noisy / max(np.percentile(noisy, 99.5), 1e-6), 0.0, 1.0).astype(np.float32)


def us_image(scenes, probe, size, rng):
    """A convex-probe B-mode ultrasound image.

    Physics along each beam of the fan (polar grid r, theta from a virtual apex ``probe["radius"]`` behind
    the skin): backscatter times Rayleigh speckle (magnitude of correlated complex Gaussian noise), specular
    echoes at impedance steps R = ((Z2 - Z1) / (Z2 + Z1))^2, transmission through the interfaces above
    (prod (1 - R)), two-way attenuation exp(-2 ∫ alpha dr) (shadows behind bone and gas, enhancement
    behind fluid), time-gain compensation; log compression and scan conversion to the fan-shaped sector.
    """
    radius, depth, half_angle = probe["radius"], probe["depth"], probe["half_angle"]
    top = radius * np.cos(half_angle)
    side = max(2.0 * (radius + depth) * np.sin(half_angle), radius + depth - top)
    grid_n = size
    pixel = side / grid_n
    apex, lateral, down = (np.asarray(probe[k], float) for k in ("apex", "lateral", "down"))
    values = np.stack([tissues.column(c) for c in ("us_echo", "us_atten", "us_z")], 1)
    props = scene_lib.sample_plane(scenes, values, apex + down * (top + side / 2), lateral, down, (grid_n, grid_n),
                                   pixel)
    n_r, n_t = size, size
    r = radius + (np.arange(n_r) + 0.5) * depth / n_r
    theta = np.linspace(-half_angle, half_angle, n_t)
    rows = np.clip(((r[:, None] * np.cos(theta)[None] - top) / pixel).astype(int), 0, grid_n - 1)
    cols = np.clip(((r[:, None] * np.sin(theta)[None] + side / 2) / pixel).astype(int), 0, grid_n - 1)
    echo, alpha, z = (props[rows, cols, i] for i in range(3))
    refl = np.zeros_like(z)
    refl[1:] = ((z[1:] - z[:-1]) / (z[1:] + z[:-1] + 1e-9)) ** 2
    dr = depth / n_r
    through = np.cumprod(1.0 - refl, axis=0) / (1.0 - refl + 1e-9)
    atten = np.exp(-2.0 * np.cumsum(alpha, axis=0) * dr)
    speckle = np.hypot(blur(rng.standard_normal((n_r, n_t)), 0.7 * size / 128),
                       blur(rng.standard_normal((n_r, n_t)), 0.7 * size / 128))
    speckle /= max(speckle.mean(), 1e-9)
    gain = np.exp(2.0 * 0.2 * (r - radius))[:, None]
    env = through**2 * atten * gain * (echo * speckle + 4.0 * refl)
    env = np.clip(env / max(0.5 * np.percentile(env, 80.0), 1e-9), 1e-6, None)
    dynamic_range = rng.uniform(35.0, 50.0)  # dB of log compression; typical tissue maps to mid-grey
    polar = rng.uniform(0.3, 0.42) + 20.0 * np.log10(env) / dynamic_range
    # Scan conversion: each output pixel looks up its (r, theta) in the polar image.
    centres = (np.arange(size) + 0.5) * side / size
    yy, xx = np.meshgrid(top + centres, centres - side / 2, indexing="ij")
    rr, tt = np.hypot(xx, yy), np.arctan2(xx, yy)
    inside = (rr >= radius) & (rr <= radius + depth) & (np.abs(tt) <= half_angle)
    ri = np.clip(((rr - radius) / depth * n_r).astype(int), 0, n_r - 1)
    ti = np.clip(((tt + half_angle) / (2 * half_angle) * (n_t - 1) + 0.5).astype(int), 0, n_t - 1)
    return np.clip(np.where(inside, polar[ri, ti], 0.0), 0.0, 1.0).astype(np.float32)
