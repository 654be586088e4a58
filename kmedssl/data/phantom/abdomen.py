"""Abdomen phantom: wall, liver, gallbladder, spleen, kidneys, great vessels, stomach, bowel, spine, pelvis.

Patient coordinates in cm (x to the patient's left, y anterior, z superior), origin at the L1 vertebra.
Everything inside the muscular wall lies in a fat/bowel "visceral" background; organs that would touch
are carved from each other, so the layer tree stays exact (siblings disjoint).
"""

import numpy as np

from kmedssl.data.phantom import geometry as geo
from kmedssl.data.phantom.chest_bones import rib_cage
from kmedssl.data.phantom.shapes import tree_segments

VISCERAL = {"fat": 0.55, "bowel": 0.45}


def abdomen_layers(rng, sex, age, abnormal):
    """Tissue layers of one abdomen and its size: (layers, {"scale", "half_width", "half_depth"}).

    Sex and age set size, subcutaneous fat and bone density; ``abnormal`` adds a liver mass or a renal cyst.
    """
    s = (1.0 if sex == "M" else 0.93) * rng.normal(1.0, 0.045)
    fat = rng.uniform(1.0, 4.5) + (0.6 if sex == "F" else 0.0)
    loss = 0.005 * max(age - 35.0, 0.0) + (0.006 * max(age - 50.0, 0.0) if sex == "F" else 0.0)
    bone = float(np.clip(rng.normal(1.0, 0.06) - loss, 0.5, 1.15))
    rx, ry = 15.5 * s + fat, 11.0 * s + 0.9 * fat
    wall = 1.3 * s

    def trunk(dx, dy):
        return geo.cylinder([0.0, 0.0, -36.0 * s], [0.0, 0.0, 22.0 * s], [rx - dx, ry - dy], up=[1.0, 0.0, 0.0])

    layers = [(trunk(0.0, 0.0), "fat", "air"), (trunk(fat, 0.9 * fat), "muscle", "fat"),
              (trunk(fat + wall, 0.9 * fat + wall), VISCERAL, "muscle")]
    skeleton, bones = _skeleton(s, bone)
    organs, solid = _organs(rng, s, abnormal, bones)
    layers += skeleton + organs + _bowel(rng, s, solid, bones)
    return layers, {"scale": s, "half_width": rx, "half_depth": ry}


def _organs(rng, s, abnormal, bones):
    """Solid organs, vessels and muscles of the cavity, plus an optional lesion; also returns the simple
    (uncarved) solids that the bowel must avoid. Carving only ever subtracts such simple solids, which
    keeps the number of terms small."""
    liver_raw = (geo.ellipsoid([-5.5 * s, 0.5 * s, 11.5 * s], np.array([9.5, 8.0, 8.0]) * s * rng.normal(1.0, 0.05))
                 & geo.halfspace([4.0 * s, 0.0, 0.0], [1.0, -0.3, 0.0]))
    spleen_raw = geo.ellipsoid([8.5 * s, -4.5 * s, 11.5 * s], np.array([3.0, 5.5, 6.0]) * s,
                               geo.rotation(0.6, 0.0, 0.0))
    liver = liver_raw - bones
    gall = geo.ellipsoid([-4.5 * s, 5.5 * s, 5.5 * s], np.array([1.6, 1.6, 3.4]) * s * rng.uniform(0.7, 1.2),
                         geo.rotation(0.3, 0.4, 0.0)) & liver_raw
    p0, p1, r = tree_segments(rng, np.array([-3.0, 1.0, 8.5]) * s,
                              [[-1, 0.2, 0.3], [-0.6, 0.5, -0.1], [-0.5, -0.6, 0.6]], 3.5 * s, 0.55 * s, 3)
    portal = geo.cylinders(p0, p1, np.stack([r, r], 1)) & liver_raw
    portal = portal - (portal & gall)
    layers = [(liver, "liver", VISCERAL), (gall, "fluid", "liver"), (portal, "blood", "liver"),
              (spleen_raw - liver_raw - bones, "spleen", VISCERAL)]
    kidney_tissue = {"kidney": 0.85, "fluid": 0.15}
    kidneys, perirenal_raw = [], []
    for side in (-1, 1):
        c = np.array([side * 7.0 * s, -4.6 * s, (2.5 if side > 0 else 1.0) * s])
        rot = geo.rotation(side * 0.5, 0.0, 0.0) @ geo.rotation(0.0, side * 0.25, 0.0)
        fat_raw = geo.ellipsoid(c, np.array([3.8, 4.0, 7.0]) * s, rot)
        kidney_raw = geo.ellipsoid(c, np.array([2.6, 2.8, 5.3]) * s, rot)
        kidney = kidney_raw - liver_raw - spleen_raw
        sinus = geo.ellipsoid(c + rot @ np.array([-side * 1.2 * s, 0.0, 0.0]), np.array([1.0, 1.3, 2.9]) * s, rot)
        layers += [(fat_raw - kidney_raw - liver_raw - spleen_raw, "fat", VISCERAL),
                   (kidney, kidney_tissue, VISCERAL),
                   (sinus & kidney_raw, {"fat": 0.7, "fluid": 0.3}, kidney_tissue)]
        kidneys.append((c, rot, kidney_raw))
        perirenal_raw.append(fat_raw)
    stomach_c, stomach_rot = np.array([6.5, 4.0, 10.5]) * s, geo.rotation(0.5, -0.4, 0.0)
    stomach_raw = geo.ellipsoid(stomach_c, np.array([4.0, 3.0, 4.8]) * s * rng.uniform(0.85, 1.15), stomach_rot)
    lumen = geo.ellipsoid(stomach_c, np.array([3.3, 2.4, 4.1]) * s, stomach_rot)
    gas = lumen & geo.halfspace([0.0, 0.0, rng.uniform(10.0, 13.0) * s], [0.0, 0.0, -1.0])
    wall = stomach_raw - lumen - liver_raw - spleen_raw
    layers += [(wall, "bowel", VISCERAL), (lumen - gas - liver_raw - spleen_raw, "fluid", VISCERAL),
               (gas - liver_raw - spleen_raw, "air", VISCERAL)]
    vessels_raw = geo.concat([geo.cylinder([1.4 * s, -2.2 * s, 22.0 * s], [0.8 * s, -2.0 * s, -14.0 * s], 1.1 * s)]
                             + [geo.cylinder([0.8 * s, -2.0 * s, -14.0 * s], [side * 6.0 * s, -1.2 * s, -30.0 * s],
                                             0.75 * s) for side in (-1, 1)]
                             + [geo.cylinder([-2.3 * s, -2.0 * s, 22.0 * s], [-1.9 * s, -2.1 * s, -14.0 * s],
                                             [1.3 * s, 0.9 * s], up=[1.0, 0.0, 0.0])])
    pancreas_raw = geo.cylinder([-2.5 * s, 1.8 * s, 5.0 * s], [8.0 * s, -1.5 * s, 8.5 * s], [1.3 * s, 1.0 * s])
    psoas = geo.concat([geo.cylinder([side * 2.6 * s, -5.6 * s, 6.0 * s], [side * 6.5 * s, -2.8 * s, -26.0 * s],
                                     [2.1 * s, 1.9 * s]) for side in (-1, 1)])
    for cut in [vessels_raw, bones] + perirenal_raw:
        psoas = psoas - cut
    layers += [(vessels_raw - liver_raw - pancreas_raw, "blood", VISCERAL),
               (pancreas_raw - spleen_raw - stomach_raw, {"liver": 0.6, "fat": 0.2, "muscle": 0.2}, VISCERAL),
               (psoas, "muscle", VISCERAL)]
    if abnormal:
        if rng.random() < 0.6:
            c = np.array([-5.5, 0.5, 11.5]) * s + rng.uniform(-1.0, 1.0, 3) * np.array([4.5, 4.0, 4.0]) * s
            mass = geo.ellipsoid(c, [rng.uniform(1.0, 3.0) * s] * 3) & liver_raw
            layers.append((mass - gall - portal, "lesion", "liver"))
        else:
            c, rot, kidney_raw = kidneys[int(rng.integers(2))]
            cyst = geo.ellipsoid(c + rot @ np.array([0.0, 0.0, rng.uniform(-3.0, 3.0) * s]),
                                 [rng.uniform(1.0, 2.2) * s] * 3) & kidney_raw
            layers.append((cyst, "fluid", kidney_tissue))
    return layers, [liver_raw, spleen_raw, stomach_raw] + perirenal_raw


def _bowel(rng, s, solid, bones):
    """Colon frame (stool and gas) and small-bowel loops on a jittered grid, carved from solid organs.

    Tube segments are summed rather than united: consecutive segments share only a sliver at each bend.
    """
    path = np.array([[-9.0, -0.5, -16.0], [-9.5, 0.5, 1.0], [-6.0, 3.5, -2.5], [0.0, 4.5, -5.5], [6.0, 3.5, -2.5],
                     [10.0, -0.5, 4.0], [9.8, -0.5, -14.0], [5.0, 3.0, -20.0], [1.0, 3.5, -22.0]]) * s
    path += rng.normal(0.0, 0.4 * s, path.shape)
    colon = geo.cylinders(path[:-1], path[1:], [2.3 * s, 2.3 * s])
    inner = geo.cylinders(path[:-1], path[1:], [1.8 * s, 1.8 * s])
    for cut in solid:
        colon, inner = colon - cut, inner - cut
    air = rng.uniform(0.4, 0.8)
    stool = {"air": air, "bowel": 0.9 - air, "fat": 0.1}
    layers = [(colon - inner, "bowel", VISCERAL), (inner, stool, VISCERAL)]
    xs, zs = np.meshgrid(np.linspace(-5.0, 5.0, 4), np.linspace(-19.0, -8.0, 4))
    tube = geo.cylinders(path[:-1], path[1:], [2.3 * s, 2.3 * s])
    for x, z in zip(xs.ravel(), zs.ravel()):
        c = np.array([x, rng.uniform(1.5, 4.5), z]) * s + rng.uniform(-0.6, 0.6, 3) * s
        rot = geo.rotation(*rng.uniform(-np.pi, np.pi, 3))
        loop = geo.ellipsoid(c, np.array([1.6, 1.4, 1.4]) * s, rot)
        content = geo.ellipsoid(c, np.array([1.2, 1.0, 1.0]) * s, rot)
        fill = str(rng.choice(["air", "fluid", "bowel"], p=[0.35, 0.45, 0.2]))
        layers += [(loop - content - tube, "bowel", VISCERAL), (content - tube, fill, VISCERAL)]
    return layers


def _skeleton(s, bone):
    """Lower thoracic and lumbar spine (bodies, processes), lower ribs, iliac wings, sacrum, femoral heads.

    Returns (layers, bones) where ``bones`` is the solid of the non-vertebral-body bones, for carving.
    """
    cortex = {"bone": 0.65 * bone, "marrow": 1.0 - 0.65 * bone}
    marrow = {"bone": 0.08 * bone, "marrow": 1.0 - 0.08 * bone}
    z = -np.arange(-2, 5) * 3.4 * s  # T11, T12, L1..L5
    n = z.size
    half = np.linspace(1.1, 1.45, n) * s
    rad = np.stack([np.linspace(2.1, 2.7, n), np.linspace(1.6, 2.0, n)], 1) * s
    y = -6.2 * s + 0.8 * s * np.sin(np.linspace(0.0, np.pi, n))  # lumbar lordosis
    top = np.stack([np.zeros(n), y, z + half], 1)
    bot = np.stack([np.zeros(n), y, z - half], 1)
    outer = geo.cylinders(bot, top, rad, up=[1.0, 0.0, 0.0])
    inset = 0.2 * s
    inner = geo.cylinders(bot + [0, 0, inset], top - [0, 0, inset], rad - inset, up=[1.0, 0.0, 0.0])
    parts = [geo.ellipsoids(np.stack([np.zeros(n), y - rad[:, 1] - 3.0 * s, z - 0.3 * s], 1),
                            np.tile([0.5, 1.7, 0.9], (n, 1)) * s)]
    for side in (-1, 1):
        parts.append(geo.ellipsoids(np.stack([np.full(n, side * 3.3 * s), y - rad[:, 1] - 1.0 * s, z], 1),
                                    np.tile([1.9, 0.5, 0.5], (n, 1)) * s))
        parts.append(geo.ellipsoid([side * 10.0 * s, -3.5 * s, -22.0 * s], np.array([6.0, 1.1, 5.5]) * s,
                                   geo.rotation(side * 0.55, side * 0.35, 0.0)))
        parts.append(geo.ellipsoid([side * 9.5 * s, 0.0, -32.5 * s], [2.4 * s] * 3))
    sacrum = geo.ellipsoid([0.0, -7.5 * s, -25.5 * s], np.array([4.5, 1.8, 5.5]) * s, geo.rotation(0.0, 0.0, 0.6))
    parts.append(sacrum)
    bones = geo.concat(parts)
    paraspinal = geo.union([geo.ellipsoid([side * 4.3 * s, -9.0 * s, -4.0 * s], np.array([2.8, 2.6, 30.0]) * s)
                            for side in (-1, 1)]) - bones
    ribs = rib_cage(s, range(8, 12), z_shift=19.0 * s)
    layers = [(outer, cortex, VISCERAL), (inner, marrow, cortex), (bones, cortex, VISCERAL),
              (ribs, cortex, VISCERAL), (paraspinal, "muscle", VISCERAL)]
    return layers, bones + ribs
