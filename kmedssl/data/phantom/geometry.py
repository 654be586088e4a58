"""Analytic solids for the phantom: convex atoms, signed sums of their intersections, exact line integrals.

An **atom** is a convex set written in its own normalised coordinates ``q = M (p - c)``::

    q_x^2 + q_y^2 + w * q_z^2 <= 1      (quadric part; rows 0 and 1 of M are zero for a half-space)
    z_lo <= q_z <= z_hi                  (slab part)

ellipsoid: w = 1 and an unbounded slab; finite elliptic cylinder: w = 0 and the slab [-1, 1];
half-space: no quadric part and the slab (-inf, 0].

A **solid** is a signed sum of convex terms, each term the intersection of up to K atoms::

    1_S(p) = sum_i s_i * prod_k 1[p in atom_ik]

so intersections (products), differences ``A - A∩B`` and disjoint unions are closed-form. Each term is
convex, so a ray ``p(t) = o + t d`` (|d| = 1) meets it in one interval, the intersection of its atoms'
intervals, and the term's line integral is ``max(0, min_k hi_k - max_k lo_k)`` (in cm). Terms whose
bounding boxes do not overlap are dropped as they are formed.
"""

import dataclasses

import numpy as np

_BIG = 1e6


@dataclasses.dataclass(frozen=True)
class Solid:
    """A signed sum of convex terms (see the module docstring); arrays over n terms and K atom slots.

    Operators: ``A + B`` is the sum (overlaps count twice: use ``union`` for overlapping solids),
    ``A & B`` the intersection, ``A - B`` the difference ``A - A∩B``, ``-A`` flips every sign.

    Attributes:
        mat: (n, K, 3, 3) world -> local normalised coordinates of each atom.
        center: (n, K, 3) atom centres (cm).
        w: (n, K) 1.0 for ellipsoids (q_z in the quadric), else 0.0.
        z_lo, z_hi: (n, K) slab bounds on q_z.
        natoms: (n,) atoms actually used per term (the rest of the K slots are null atoms).
        sign: (n,) +1.0 or -1.0.
        box_lo, box_hi: (n, 3) axis-aligned bounding box of each term.
    """

    mat: np.ndarray
    center: np.ndarray
    w: np.ndarray
    z_lo: np.ndarray
    z_hi: np.ndarray
    natoms: np.ndarray
    sign: np.ndarray
    box_lo: np.ndarray
    box_hi: np.ndarray

    def __len__(self):
        return self.sign.shape[0]

    def take(self, index):
        """The terms selected by ``index`` (an integer array or a boolean mask)."""
        return Solid(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))

    def __neg__(self):
        return dataclasses.replace(self, sign=-self.sign)

    def __add__(self, other):
        return concat([self, other])

    def __and__(self, other):
        return intersect(self, other)

    def __sub__(self, other):
        return concat([self, -intersect(self, other)])


def _atoms(mat, center, w, z_lo, z_hi, half_extent):
    n = mat.shape[0]
    return Solid(
        mat=mat[:, None], center=center[:, None], w=np.broadcast_to(w, (n,))[:, None].astype(float),
        z_lo=np.broadcast_to(z_lo, (n,))[:, None].astype(float),
        z_hi=np.broadcast_to(z_hi, (n,))[:, None].astype(float),
        natoms=np.ones(n, dtype=np.int64), sign=np.ones(n),
        box_lo=center - half_extent, box_hi=center + half_extent,
    )


def rotation(yaw=0.0, pitch=0.0, roll=0.0):
    """Rotation matrix R = Rz(yaw) @ Ry(pitch) @ Rx(roll) (radians); columns are the local axes in world."""
    cz, sz, cy, sy, cx, sx = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    return rz @ ry @ rx


def ellipsoids(centers, radii, rotations=None):
    """Ellipsoids ``|diag(1/r) R^T (p - c)| <= 1``; centers, radii (n, 3), rotations (n, 3, 3) or None."""
    centers = np.atleast_2d(np.asarray(centers, float))
    radii = np.atleast_2d(np.asarray(radii, float))
    n = centers.shape[0]
    if rotations is None:
        rot = np.broadcast_to(np.eye(3), (n, 3, 3))
    else:
        rot = np.asarray(rotations, float).reshape(n, 3, 3)
    mat = np.transpose(rot, (0, 2, 1)) / radii[:, :, None]  # diag(1/r) @ R^T
    inv = rot * radii[:, None, :]  # R @ diag(r)
    half = np.sqrt((inv**2).sum(axis=2))
    return _atoms(mat, centers, 1.0, -np.inf, np.inf, half)


def ellipsoid(center, radii, rot=None):
    """One ellipsoid (see ``ellipsoids``); ``rot`` is a (3, 3) rotation or None."""
    return ellipsoids([center], [radii], None if rot is None else [rot])


def cylinders(p0, p1, radii, up=None):
    """Finite elliptic cylinders from p0 to p1 (n, 3); radii (n, 2) along ``up`` (projected) and across."""
    p0 = np.atleast_2d(np.asarray(p0, float))
    p1 = np.atleast_2d(np.asarray(p1, float))
    n = p0.shape[0]
    radii = np.broadcast_to(np.asarray(radii, float), (n, 2))
    axis = p1 - p0
    half_len = np.maximum(np.linalg.norm(axis, axis=1), 1e-6) / 2
    ez = axis / (2 * half_len[:, None])
    up = np.broadcast_to(np.asarray([0.0, 0.0, 1.0] if up is None else up, float), (n, 3))
    ex = up - (up * ez).sum(1, keepdims=True) * ez
    bad = np.linalg.norm(ex, axis=1) < 1e-6
    ex[bad] = _cross(ez[bad], np.array([[1.0, 1e-3, 0.0]]))
    ex /= np.linalg.norm(ex, axis=1, keepdims=True)
    ey = _cross(ez, ex)
    rot = np.stack([ex, ey, ez], axis=2)  # (n, 3, 3) columns = local axes
    scale = np.concatenate([radii, half_len[:, None]], axis=1)
    mat = np.transpose(rot, (0, 2, 1)) / scale[:, :, None]
    inv = rot * scale[:, None, :]
    half = np.sqrt(inv[:, :, 0] ** 2 + inv[:, :, 1] ** 2) + np.abs(inv[:, :, 2])
    return _atoms(mat, (p0 + p1) / 2, 0.0, -1.0, 1.0, half)


def _cross(a, b):
    """Row-wise cross product of (n, 3) arrays (np.cross is slow on small inputs)."""
    return np.stack([a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1], a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
                     a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]], axis=1)


def cylinder(p0, p1, radii, up=None):
    """One finite elliptic cylinder (see ``cylinders``); ``radii`` is a number or (r_up, r_across)."""
    return cylinders([p0], [p1], [np.broadcast_to(np.asarray(radii, float), (2,))], up)


def halfspace(point, normal):
    """The half-space ``(p - point) . n <= 0`` (unbounded: only ever intersected with bounded atoms)."""
    normal = np.asarray(normal, float)
    mat = np.zeros((1, 3, 3))
    mat[0, 2] = normal / np.linalg.norm(normal)
    return _atoms(mat, np.asarray(point, float)[None], 0.0, -np.inf, 0.0, np.full((1, 3), _BIG))


def concat(solids):
    """The signed sum of several solids (padding atom slots with null atoms)."""
    solids = [s for s in solids if len(s)]
    if not solids:
        return empty()
    k = max(s.mat.shape[1] for s in solids)
    padded = [_pad(s, k) for s in solids]
    return Solid(*(np.concatenate([p[i] for p in padded]) for i in range(5)),
                 natoms=np.concatenate([s.natoms for s in solids]),
                 sign=np.concatenate([s.sign for s in solids]),
                 box_lo=np.concatenate([s.box_lo for s in solids]),
                 box_hi=np.concatenate([s.box_hi for s in solids]))


def empty():
    """The empty solid (no terms)."""
    z = np.zeros((0, 1))
    return Solid(np.zeros((0, 1, 3, 3)), np.zeros((0, 1, 3)), z, z, z, np.zeros(0, np.int64), np.zeros(0),
                 np.zeros((0, 3)), np.zeros((0, 3)))


def _pad(s, k):
    extra = k - s.mat.shape[1]
    if not extra:
        return s.mat, s.center, s.w, s.z_lo, s.z_hi
    n = len(s)
    return (
        np.concatenate([s.mat, np.zeros((n, extra, 3, 3))], 1),
        np.concatenate([s.center, np.zeros((n, extra, 3))], 1),
        np.concatenate([s.w, np.zeros((n, extra))], 1),
        np.concatenate([s.z_lo, np.full((n, extra), -np.inf)], 1),
        np.concatenate([s.z_hi, np.full((n, extra), np.inf)], 1),
    )


def intersect(a, b):
    """``A ∩ B`` as the signed sum of all pairwise term intersections whose bounding boxes overlap."""
    ia, ib = np.meshgrid(np.arange(len(a)), np.arange(len(b)), indexing="ij")
    ia, ib = ia.ravel(), ib.ravel()
    lo = np.maximum(a.box_lo[ia], b.box_lo[ib])
    hi = np.minimum(a.box_hi[ia], b.box_hi[ib])
    keep = np.all(lo < hi, axis=1)
    ia, ib, lo, hi = ia[keep], ib[keep], lo[keep], hi[keep]
    pairs = zip(_pad(a, a.mat.shape[1]), _pad(b, b.mat.shape[1]))
    fields = [np.concatenate([fa[ia], fb[ib]], axis=1) for fa, fb in pairs]
    natoms = a.natoms[ia] + b.natoms[ib]
    ka = a.mat.shape[1]
    if np.any(a.natoms[ia] < ka):
        # Move the used atoms of every term to the front: slot j is used when j < natoms of its source.
        slot = np.arange(fields[0].shape[1])[None]
        used = np.where(slot < ka, slot < a.natoms[ia][:, None], slot - ka < b.natoms[ib][:, None])
        order = np.argsort(~used, axis=1, kind="stable")[:, : max(int(natoms.max()), 1)]
        fields = [np.take_along_axis(f, order.reshape(order.shape + (1,) * (f.ndim - 2)), axis=1) for f in fields]
    else:
        fields = [f[:, : max(int(natoms.max(initial=1)), 1)] for f in fields]
    return Solid(*fields, natoms=natoms, sign=a.sign[ia] * b.sign[ib], box_lo=lo, box_hi=hi)


def union(solids):
    """The union of solids as a disjoint signed sum: U_1 = S_1, U_k = U_{k-1} + (S_k - S_k ∩ U_{k-1})."""
    total = empty()
    for s in solids:
        total = s if not len(total) else total + (s - total)
    return total
