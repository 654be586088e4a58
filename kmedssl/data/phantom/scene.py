"""Scenes of tissue layers, and their two measurements: line integrals (radiographs) and plane samples (slices).

A scene is a tree of tissue layers: each layer is a solid (``geometry.Solid``) filled with a
tissue and lying inside its parent's tissue, siblings disjoint. A property f (attenuation, HU, MR signal,
...) of the whole volume is then the sum over layers of ``(f(tissue) - f(parent)) * 1_layer``, so

    ∫_ray f dl = sum_terms sign * (f(tissue) - f(parent)) * chord(term, ray)

is exact and costs O(sum of the terms' pixel footprints). Only pixels inside a term's projected bounding
box are visited (a flat list of (term, pixel) pairs), so small primitives (ribs, vessels) are cheap.
"""

import dataclasses

import numpy as np

from kmedssl.data.phantom import geometry as geo
from kmedssl.data.phantom import tissues as tissues


@dataclasses.dataclass(frozen=True)
class Scene:
    """Compiled layers: one solid sorted by atom count (descending) and each term's tissue step.

    Attributes:
        solid: all terms of all layers.
        delta: (n_terms, n_tissues) sign * (weights(tissue) - weights(parent)); the term signs live here.
    """

    solid: geo.Solid
    delta: np.ndarray

    def steps(self, values):
        """Per-term property step (n_terms, P) for a property table ``values`` (n_tissues, P)."""
        return self.delta @ values


def build_scene(layers):
    """Compile ``layers``, a list of (solid, tissue, parent_tissue) with tissue specs as in ``tissues.weights``."""
    solids, deltas = [], []
    for solid, tissue, parent in layers:
        if len(solid):
            solids.append(solid)
            step = tissues.weights(tissue) - tissues.weights(parent)
            deltas.append(solid.sign[:, None] * step[None])
    solid = geo.concat(solids)
    delta = np.concatenate(deltas) if deltas else np.zeros((0, len(tissues.TISSUES)))
    order = np.argsort(-solid.natoms, kind="stable")  # the kernels rely on this order (prefix per atom slot)
    return Scene(solid=solid.take(order), delta=delta[order])


def _pairs(r0, r1, c0, c1, width):
    """Flat (term, pixel) pairs for per-term pixel boxes [r0, r1) x [c0, c1), in term order."""
    rows, cols = np.maximum(r1 - r0, 0), np.maximum(c1 - c0, 0)
    count = rows * cols
    term = np.repeat(np.arange(count.size), count)
    offset = np.arange(term.size) - np.repeat(np.cumsum(count) - count, count)
    ncol = np.maximum(cols, 1)[term]
    pix = (r0[term] + offset // ncol) * width + c0[term] + offset % ncol
    return term, pix, count


def _gather_mat(mat, term, k):
    return mat[term, k].reshape(-1, 9)


def _apply(mat9, vec):
    """(m, 9) row-major 3x3 matrices times (m, 3) vectors -> (m, 3)."""
    x, y, z = vec[:, 0:1], vec[:, 1:2], vec[:, 2:3]
    return mat9[:, 0::3] * x + mat9[:, 1::3] * y + mat9[:, 2::3] * z


def _grid(origin, u, v, shape, pixel):
    """(H * W, 3) pixel centres of a plane grid: origin + (j + 1/2 - W/2) px u + (i + 1/2 - H/2) px v."""
    height, width = shape
    jj, ii = np.meshgrid(np.arange(width) + 0.5 - width / 2, np.arange(height) + 0.5 - height / 2)
    return origin + pixel * (jj.reshape(-1, 1) * u + ii.reshape(-1, 1) * v)


def _pixel_ranges(col, row, shape, margin):
    """Clipped [r0, r1) x [c0, c1) covering the (T, 8) corner coordinates, widened by ``margin`` pixels."""
    height, width = shape
    c0 = np.clip(np.ceil(col.min(1) - margin), 0, width).astype(np.int64)
    c1 = np.clip(np.floor(col.max(1) + margin) + 1, 0, width).astype(np.int64)
    r0 = np.clip(np.ceil(row.min(1) - margin), 0, height).astype(np.int64)
    r1 = np.clip(np.floor(row.max(1) + margin) + 1, 0, height).astype(np.int64)
    return r0, r1, c0, c1


def _box_corners(solid):
    corners = np.stack(np.meshgrid([0, 1], [0, 1], [0, 1], indexing="ij"), -1).reshape(8, 3)
    return np.where(corners[None] == 0, solid.box_lo[:, None], solid.box_hi[:, None])  # (T, 8, 3)


def line_integrals(scenes, values, source, origin, u, v, shape, pixel):
    """Line integrals of a property along rays from a point source to each detector pixel (cone beam).

    Args:
        scenes: compiled ``Scene`` objects whose layers together form the volume (their integrals add).
        values: (n_tissues,) property (e.g. mu in 1/cm).
        source: (3,) source position (cm).
        origin: (3,) detector centre; u, v: (3,) orthonormal detector directions of increasing column, row.
        shape: (H, W); pixel: detector pixel spacing (cm).

    Returns:
        (H, W) float64: sum over terms of step * chord length (cm), i.e. ∫ f dl along each ray.
    """
    return sum((_line_integrals(scene, values, source, origin, u, v, shape, pixel) for scene in scenes),
               np.zeros(shape))


def _line_integrals(scene, values, source, origin, u, v, shape, pixel):
    source, origin, u, v = (np.asarray(x, float) for x in (source, origin, u, v))
    height, width = shape
    step = scene.steps(np.asarray(values, float)[:, None])[:, 0]
    live = np.abs(step) > 1e-9
    s = scene.solid.take(live)
    step = step[live]
    rays = _grid(origin, u, v, shape, pixel) - source
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    normal = np.cross(u, v)
    pts = _box_corners(s) - source
    hit = ((origin - source) @ normal) / (pts @ normal)[..., None] * pts - (origin - source)
    col = hit @ u / pixel + width / 2 - 0.5
    row = hit @ v / pixel + height / 2 - 0.5
    term, pix, count = _pairs(*_pixel_ranges(col, row, shape, 1e-9), width)
    d = rays[pix].T.astype(np.float32)  # (3, m)
    packed = _pack(s, source)  # (K, 15, T) float32
    lo = np.full(term.size, -np.inf, np.float32)
    hi = np.full(term.size, np.inf, np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for k in range(s.mat.shape[1]):
            nterm = int((s.natoms > k).sum())  # terms are sorted by atom count: a prefix
            m = int(count[:nterm].sum())
            klo, khi = _atom_interval(np.repeat(packed[k, :, :nterm], count[:nterm], axis=1), d[:, :m])
            np.maximum(lo[:m], klo, out=lo[:m])
            np.minimum(hi[:m], khi, out=hi[:m])
        chord = np.nan_to_num(np.maximum(hi - lo, 0.0), copy=False, posinf=0.0)
    out = np.bincount(pix, weights=chord * step[term], minlength=height * width)
    return out.reshape(height, width)


def _pack(s, source):
    """Per atom slot: rows [M (9, row-major), q0 = M (source - c) (3), w, z_lo, z_hi] over terms, float32."""
    q0 = np.einsum("tkij,tkj->tki", s.mat, source - s.center)
    rows = [s.mat.reshape(len(s), -1, 9), q0, s.w[..., None], s.z_lo[..., None], s.z_hi[..., None]]
    return np.concatenate(rows, axis=2).transpose(1, 2, 0).astype(np.float32)


def _atom_interval(p, d):
    """Interval [lo, hi] of t where ``source + t d`` is inside an atom; p (15, m) packed atoms, d (3, m).

    With e = M d and q(t) = q0 + t e, the quadric part is solved around its closest point
    t* = -<q0, e>_w / <e, e>_w, q* = q(t*): inside for |t - t*| <= sqrt((1 - |q*|_w^2) / <e, e>_w), which
    has no b^2 - ac cancellation, so float32 resolves chords to ~1e-7 of the source distance (2e-5 cm at
    180 cm). A miss gives an empty or zero-length interval; a vanishing <e, e>_w (half-space, or a ray
    along a cylinder's axis) a huge one. Written without ``np.where`` (slow on large arrays).
    """
    e0 = p[0] * d[0] + p[1] * d[1] + p[2] * d[2]
    e1 = p[3] * d[0] + p[4] * d[1] + p[5] * d[2]
    e2 = p[6] * d[0] + p[7] * d[1] + p[8] * d[2]
    q0, q1, q2, w = p[9], p[10], p[11], p[12]
    we2 = w * e2
    a = e0 * e0 + e1 * e1 + we2 * e2 + np.float32(1e-30)
    tc = -(q0 * e0 + q1 * e1 + q2 * we2) / a
    r0, r1, r2 = q0 + tc * e0, q1 + tc * e1, q2 + tc * e2
    half = np.sqrt(np.maximum(1.0 - (r0 * r0 + r1 * r1 + w * r2 * r2), 0.0) / a)
    ez = e2 + np.float32(1e-30)
    t1 = (p[13] - q2) / ez
    t2 = (p[14] - q2) / ez
    return np.maximum(tc - half, np.minimum(t1, t2)), np.minimum(tc + half, np.maximum(t1, t2))


def sample_plane(scenes, values, origin, u, v, shape, pixel):
    """Property values on a plane, anti-aliased by each surface's distance to the pixel centre.

    Args:
        scenes: compiled ``Scene`` objects whose layers together form the volume (their steps add).
        values: (n_tissues, P) property table.
        origin: (3,) plane centre; u, v: (3,) orthonormal directions of increasing column and row.
        shape: (H, W) output size; pixel: pixel spacing (cm).

    Returns:
        (H, W, P) float64 property values (air outside every layer).
    """
    values = np.asarray(values, float)
    steps = sum((_plane_steps(scene, values, origin, u, v, shape, pixel) for scene in scenes),
                np.zeros((*shape, values.shape[1])))
    return steps + values[tissues.TISSUES.index("air")]


def _plane_steps(scene, values, origin, u, v, shape, pixel):
    height, width = shape
    u, v, origin = (np.asarray(x, float) for x in (u, v, origin))
    step = scene.steps(values)
    s = scene.solid
    normal = np.cross(u, v)
    pts = _box_corners(s) - origin
    dist = pts @ normal
    crosses = (dist.min(1) <= pixel) & (dist.max(1) >= -pixel)
    col = pts @ u / pixel + width / 2 - 0.5
    row = pts @ v / pixel + height / 2 - 0.5
    r0, r1, c0, c1 = _pixel_ranges(col, row, shape, 1.0)
    c1 = np.where(crosses, c1, c0)
    term, pix, count = _pairs(r0, r1, c0, c1, width)
    points = _grid(origin, u, v, shape, pixel)[pix]
    cover = np.ones(term.size)
    znorm = np.linalg.norm(s.mat[:, :, 2, :], axis=-1)  # |grad q_z| per atom
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for k in range(s.mat.shape[1]):
            m = int(count[s.natoms > k].sum())
            t = term[:m]
            mat9 = _gather_mat(s.mat, t, k)
            q = _apply(mat9, points[:m] - s.center[t, k])
            w = s.w[t, k]
            f = q[:, 0] ** 2 + q[:, 1] ** 2 + w * q[:, 2] ** 2
            g = q * np.stack([np.ones_like(w), np.ones_like(w), w], 1)
            grad = 2 * (mat9[:, 0:3] * g[:, 0:1] + mat9[:, 3:6] * g[:, 1:2] + mat9[:, 6:9] * g[:, 2:3])
            gnorm = np.linalg.norm(grad, axis=1)
            quad = np.where(gnorm > 0, (1.0 - f) / gnorm, np.where(f <= 1.0, np.inf, -np.inf))
            slab = np.minimum(q[:, 2] - s.z_lo[t, k], s.z_hi[t, k] - q[:, 2]) / znorm[t, k]
            slab = np.where(np.isnan(slab), np.inf, slab)
            cover[:m] = np.minimum(cover[:m], np.clip(0.5 + np.minimum(quad, slab) / pixel, 0.0, 1.0))
    out = np.stack([np.bincount(pix, weights=cover * step[term, p], minlength=height * width)
                    for p in range(step.shape[1])], axis=-1)
    return out.reshape(height, width, -1)
