"""Small geometric helpers shared by the phantom anatomies: orientation frames and branching trees."""

import numpy as np


def frame(axis, up):
    """Rotation whose local x axis is ``axis`` and local z axis is as close to ``up`` as possible."""
    x = np.asarray(axis, float)
    x = x / np.linalg.norm(x)
    z = np.asarray(up, float) - (np.asarray(up, float) @ x) * x
    if np.linalg.norm(z) < 1e-6:
        z = np.cross(x, [1.0, 0.0, 0.0]) if abs(x[0]) < 0.9 else np.cross(x, [0.0, 1.0, 0.0])
    z = z / np.linalg.norm(z)
    return np.stack([x, np.cross(z, x), z], axis=1)


def _turn(rng, direction, angle):
    """``direction`` turned by ``angle`` (radians) about a random perpendicular axis."""
    perp = np.cross(direction, rng.normal(size=3))
    perp /= np.linalg.norm(perp)
    return np.cos(angle) * direction + np.sin(angle) * perp


def tree_segments(rng, root, trunks, length, radius, generations, shrink=0.72, taper=None):
    """A branching tree of tapering segments (vessels, bronchi).

    Each trunk direction starts a segment of ``length`` at ``root``; every segment ends in two children
    turned by 20-40 degrees, ``shrink`` times as long and ``taper`` (default ``shrink``) times as thick,
    for ``generations`` levels in all.

    Returns:
        (p0 (n, 3), p1 (n, 3), radius (n,)) with n = len(trunks) * (2**generations - 1).
    """
    starts, ends, radii = [], [], []
    level = [(np.asarray(root, float), np.asarray(d, float) / np.linalg.norm(d)) for d in trunks]
    seg_len, seg_r = length, radius
    for _ in range(generations):
        nxt = []
        for p, d in level:
            q = p + d * seg_len * rng.uniform(0.8, 1.2)
            starts.append(p)
            ends.append(q)
            radii.append(seg_r)
            nxt += [(q, _turn(rng, d, rng.uniform(0.35, 0.7))) for _ in range(2)]
        level, seg_len, seg_r = nxt, seg_len * shrink, seg_r * (shrink if taper is None else taper)
    return np.array(starts), np.array(ends), np.array(radii)
