"""Bony thorax of the chest phantom: vertebrae, ribs with costal cartilages, sternum, clavicles, scapulae, humeri.

Ribs follow the cage: rib k leaves its vertebra T_k, curves around an ellipse whose size follows the
cage's barrel shape, and falls as it goes forward (anterior ends 3-4 vertebrae below the head), so the
posterior ribs look nearly horizontal and the anterior ribs slope down on a frontal radiograph.
"""

import numpy as np

from kmedssl.data.phantom import geometry as geo

_VERTEBRAE = 13  # T1..T12, L1
_WIDTH = (0.52, 0.68, 0.8, 0.88, 0.94, 0.98, 1.0, 1.0, 0.98, 0.95, 0.9, 0.85)  # cage half-width per rib
_DEPTH = (0.62, 0.75, 0.85, 0.92, 0.96, 0.99, 1.0, 1.0, 0.99, 0.97, 0.94, 0.9)
_END = (1.15, 1.1, 1.08, 1.05, 1.02, 1.0, 0.95, 0.75, 0.55, 0.3, -0.1, -0.45)  # anterior bony end angle
_CART = (1.45, 1.45, 1.45, 1.45, 1.42, 1.38, 1.32, 1.2, 1.05, 0.8, -0.1, -0.45)  # cartilage end angle


def vertebra_levels(s):
    """z (cm) of the vertebral body centres T1..L1 and their half-heights."""
    z = 14.0 * s - np.arange(_VERTEBRAE) * 2.75 * s
    half = (0.95 + 0.03 * np.arange(_VERTEBRAE)) * s
    return z, half


def chest_bones(a, pose):
    """Layers (solid, tissue, parent) of the bony thorax for anatomy ``a`` in a pose ("pa", "ap", "arms_up")."""
    s = a.s
    bone = {"bone": min(0.55 * a.bone, 1.0), "marrow": 1.0 - min(0.55 * a.bone, 1.0)}
    cortex = {"bone": 0.65 * a.bone, "marrow": 1.0 - 0.65 * a.bone}
    marrow = {"bone": 0.08 * a.bone, "marrow": 1.0 - 0.08 * a.bone}
    # Vertebrae at chest-radiograph energies: thinner cortex fraction than long bones.
    vertebral = {"bone": 0.45 * a.bone, "marrow": 1.0 - 0.45 * a.bone}
    processes = {"bone": 0.4 * a.bone, "marrow": 1.0 - 0.4 * a.bone}
    layers = _spine(s, vertebral, marrow, processes)
    layers.append((rib_cage(s), bone, "muscle"))
    costal = {"cartilage": 1.0 - a.cartilage_calcium, "calcium": a.cartilage_calcium}  # calcifies with age
    layers.append((rib_cage(s, cartilage=True), costal,
                   "muscle"))
    ryc = 9.0 * s
    sternum = geo.cylinder([0.0, ryc + 0.9 * s, 11.0 * s], [0.0, ryc + 1.4 * s, -7.0 * s], [1.6 * s, 0.55 * s],
                           up=[1.0, 0.0, 0.0])
    layers.append((sternum, bone, "muscle"))
    for side in (-1, 1):
        layers.append((clavicle(s, side)[1], cortex, "muscle"))
        # In a PA view the shoulders are rolled forward and the scapulae rotate out of the lung fields.
        out = 2.2 * s if pose == "pa" else 0.0
        scap_axis = geo.rotation(side * (0.55 + 0.25 * (pose == "pa")), 0.0, 0.12 * side)
        scapula = geo.ellipsoid([side * (10.0 * s + out), -ryc - 0.6 * s + 0.5 * out, 5.5 * s],
                                np.array([5.0, 0.55, 7.5]) * s, scap_axis)
        layers.append((scapula, {"bone": 0.35 * a.bone, "marrow": 1.0 - 0.35 * a.bone}, "muscle"))
        rx = 15.3 * s
        head = np.array([side * (rx - 0.8 * s), -0.8 * s, 11.8 * s])
        elbow = ([side * 9.5 * s, 12.0 * s, 42.0 * s] if pose == "arms_up"
                 else [side * (rx + 3.4 * s), 0.3 * s, -20.0 * s])
        humerus = geo.union([geo.ellipsoid(head, [2.4 * s] * 3), geo.cylinder(head, elbow, 1.2 * s)])
        layers.append((humerus, bone, "muscle"))
    return layers


def clavicle(s, side):
    """One clavicle (side -1: patient's right, +1: left) for skeleton scale ``s``.

    Returns:
        (path, solid): path (4, 3) is the centre line (cm) from the sternal (medial) end ``path[0]`` to the
        acromial end; solid is the union of cylinders of radius 0.85 s along it.
    """
    ryc = 9.0 * s
    path = np.array([[1.6, ryc / s + 0.9, 12.2], [7.0, ryc / s - 0.2, 12.6], [12.0, 1.5, 13.4],
                     [14.6, -1.0, 13.8]]) * s
    path[:, 0] *= side
    return path, geo.union([geo.cylinder(p, q, 0.85 * s) for p, q in zip(path[:-1], path[1:])])


def _spine(s, cortex, marrow, bone):
    """Vertebral bodies (cortex + marrow), pedicles, transverse and spinous processes."""
    z, half = vertebra_levels(s)
    n = z.size
    y = -5.0 * s + 0.6 * s * np.sin(np.linspace(0.3, 2.8, n))  # thoracic kyphosis
    rx = (1.7 + 0.06 * np.arange(n)) * s
    ry = (1.35 + 0.045 * np.arange(n)) * s
    top = np.stack([np.zeros(n), y, z + half], 1)
    bot = np.stack([np.zeros(n), y, z - half], 1)
    outer = geo.cylinders(bot, top, np.stack([rx, ry], 1), up=[1.0, 0.0, 0.0])
    inset = 0.18 * s
    inner = geo.cylinders(bot + [0, 0, inset], top - [0, 0, inset], np.stack([rx - inset, ry - inset], 1),
                          up=[1.0, 0.0, 0.0])
    parts = []
    for side in (-1, 1):
        ped0 = np.stack([side * 0.62 * rx, y - ry * 0.7, z + 0.2 * s], 1)
        ped1 = ped0 - [0.0, 1.8 * s, 0.0]
        parts.append(geo.cylinders(ped0, ped1, np.stack([0.5 * s * np.ones(n), 0.38 * s * np.ones(n)], 1)))
        parts.append(geo.ellipsoids(np.stack([side * 2.6 * s * np.ones(n), y - ry - 1.9 * s, z + 0.2 * s], 1),
                                    np.tile([1.4 * s, 0.55 * s, 0.55 * s], (n, 1))))
    spinous_rot = np.repeat(geo.rotation(0.0, 0.0, -0.5)[None], n, 0)
    parts.append(geo.ellipsoids(np.stack([np.zeros(n), y - ry - 3.7 * s, z - 0.9 * s], 1),
                                np.tile([0.45 * s, 1.8 * s, 0.6 * s], (n, 1)), spinous_rot))
    return [(outer, cortex, "muscle"), (inner, marrow, cortex), (geo.concat(parts), bone, "muscle")]


def _rib_path(s, k, side, phi, z):
    """Points (n, 3) of rib k (0-based) at angles ``phi`` around the cage (-pi/2 posterior, 0 lateral)."""
    rx = 13.6 * s * _WIDTH[k]
    ry = 9.6 * s * _DEPTH[k]
    u = phi - phi[0]
    drop = (0.45 + 0.02 * k) * u + (0.95 - 0.025 * k) * u ** 2
    return np.stack([side * rx * np.cos(phi), -0.5 * s + ry * np.sin(phi), z[k] + 0.2 * s - drop * s], 1)


def rib_cage(s, ribs=range(12), z_shift=0.0, cartilage=False):
    """Rib segments (cylinders along each rib's path) of the chosen ribs (0-based), optionally the costal
    cartilages instead; ``z_shift`` moves them (cm) for phantoms whose origin is not the chest's."""
    p0, p1, radius = [], [], []
    z, _ = vertebra_levels(s)
    for k in ribs:
        rx = 13.6 * s * _WIDTH[k]
        start = -np.arccos(min(2.7 * s / rx, 0.99))
        for side in (-1, 1):
            if not cartilage:
                pts = _rib_path(s, k, side, np.linspace(start, _END[k], 9), z)
                radius.append(np.linspace(0.5, 0.62, 8) * s)
            elif _CART[k] > _END[k]:
                pts = _rib_path(s, k, side, np.concatenate([[start], np.linspace(_END[k], _CART[k], 4)]), z)[1:]
                radius.append(np.full(3, 0.55 * s))
            else:
                continue
            p0.append(pts[:-1])
            p1.append(pts[1:])
    r = np.concatenate(radius)
    thick = 0.35 * s if cartilage else 0.3 * s
    return geo.cylinders(np.concatenate(p0) + [0.0, 0.0, z_shift], np.concatenate(p1) + [0.0, 0.0, z_shift],
                         np.stack([r, np.full_like(r, thick)], 1))
