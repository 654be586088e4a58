"""Knee phantom: femur, tibia, fibula, patella (cortex + fatty marrow), cartilage, menisci, cruciate and
patellar ligaments, Hoffa's fat pad, thigh and calf muscle under subcutaneous fat.

Coordinates in cm: x lateral, y anterior, z superior (towards the hip), origin at the joint line.
``abnormal`` gives the classic pair of an ACL tear (the ligament interrupted) and a joint effusion.
"""

import numpy as np

from kmedssl.data.phantom import geometry as geo


def knee_layers(rng, sex, age, abnormal):
    """Tissue layers of one knee and its size: (layers, {"scale", "half_width", "half_depth"})."""
    s = (1.0 if sex == "M" else 0.9) * rng.normal(1.0, 0.05)
    fat = rng.uniform(0.4, 2.0) + (0.5 if sex == "F" else 0.0)
    loss = 0.005 * max(age - 35.0, 0.0) + (0.006 * max(age - 50.0, 0.0) if sex == "F" else 0.0)
    bone = float(np.clip(rng.normal(1.0, 0.06) - loss, 0.5, 1.15))
    cartilage = max(0.35 - 0.003 * max(age - 30.0, 0.0), 0.1) * s  # thins with age

    def limb(inset):
        """Thigh and calf as round-ended tubes merging into the knee: no flat caps inside the image."""
        r_thigh, r_calf = 6.8 * s + fat - inset, 5.3 * s + fat - inset
        thigh = geo.union([geo.cylinder([0.0, -0.5 * s, 6.0 * s], [0.0, -1.0 * s, 34.0 * s], r_thigh),
                           geo.ellipsoid([0.0, -0.5 * s, 6.0 * s], [r_thigh, r_thigh, 6.0 * s])])
        calf = geo.union([geo.cylinder([0.0, -1.0 * s, -34.0 * s], [0.0, -0.6 * s, -6.0 * s], r_calf),
                          geo.ellipsoid([0.0, -0.6 * s, -6.0 * s], [r_calf, r_calf, 6.0 * s])])
        joint = geo.ellipsoid([0.0, 0.0, 0.5 * s], [5.7 * s + fat - inset, 6.0 * s + fat - inset, 6.5 * s])
        return geo.union([thigh, joint, calf])

    cortex = {"bone": 0.7 * bone, "marrow": 1.0 - 0.7 * bone}
    marrow = {"marrow": 0.75, "fat": 0.25}
    femur, femur_in = _femur(s, 0.05 * s + cartilage + 2.4 * s)
    tibia, tibia_in = _tibia(s, -0.05 * s - cartilage)
    patella = geo.ellipsoid([0.0, 4.6 * s, 3.2 * s], np.array([2.3, 1.0, 2.6]) * s)
    patella_in = geo.ellipsoid([0.0, 4.6 * s, 3.2 * s], np.array([2.0, 0.72, 2.3]) * s)
    fibula = geo.concat([geo.ellipsoid([3.4 * s, -2.0 * s, -4.2 * s], [1.1 * s] * 3),
                         geo.cylinder([3.3 * s, -2.0 * s, -5.0 * s], [2.9 * s, -1.5 * s, -30.0 * s], 0.7 * s)])
    condyle_z = 0.05 * s + cartilage + 2.4 * s
    condyles = [geo.ellipsoid([side * 2.2 * s, -1.0 * s, condyle_z], np.array([2.0, 3.0, 2.4]) * s + cartilage)
                for side in (-1, 1)]
    cart = geo.concat(condyles) - femur
    plateau = geo.cylinder([0.0, -0.3 * s, -0.05 * s - cartilage], [0.0, -0.3 * s, -0.05 * s], [3.4 * s, 2.4 * s],
                           up=[1.0, 0.0, 0.0])
    bones = femur + tibia + patella + fibula
    layers = [(limb(0.0), "fat", "air"), (limb(fat), "muscle", "fat"),
              (femur, cortex, "muscle"), (femur_in, marrow, cortex), (tibia, cortex, "muscle"),
              (tibia_in, marrow, cortex), (patella, cortex, "muscle"), (patella_in, marrow, cortex),
              (fibula, cortex, "muscle"), (cart, "cartilage", "muscle"), (plateau, "cartilage", "muscle")]
    hoffa = geo.ellipsoid([0.0, 3.2 * s, -0.6 * s], np.array([2.2, 1.3, 1.7]) * s) - bones
    tendon = geo.cylinder([0.0, 5.0 * s, 0.8 * s], [0.2 * s, 3.0 * s, -4.8 * s], [1.3 * s, 0.35 * s],
                          up=[1.0, 0.0, 0.0]) - bones
    quad = geo.cylinder([0.0, 4.9 * s, 5.6 * s], [0.0, 3.0 * s, 14.0 * s], [2.0 * s, 0.45 * s],
                        up=[1.0, 0.0, 0.0]) - bones
    menisci = []
    for side in (-1, 1):
        bottom, top = [side * 2.0 * s, -0.4 * s, -0.4 * s], [side * 2.0 * s, -0.4 * s, 0.25 * s]
        ring = geo.cylinder(bottom, top, [1.6 * s, 2.0 * s], up=[1.0, 0.0, 0.0])
        hole = geo.cylinder(bottom, top, [0.9 * s, 1.3 * s], up=[1.0, 0.0, 0.0])
        menisci.append(ring - hole)
    meniscus = geo.concat(menisci)
    for cut in (femur, tibia, cart, plateau):
        meniscus = meniscus - cut
    pcl = geo.cylinder([-0.7 * s, 0.2 * s, 1.8 * s], [0.0, -2.3 * s, -0.8 * s], 0.5 * s)
    acl = geo.cylinder([0.7 * s, -1.6 * s, 1.8 * s], [-0.3 * s, 1.0 * s, -0.4 * s], 0.42 * s)
    if abnormal:
        acl = acl - geo.ellipsoid([0.2 * s, -0.3 * s, 0.7 * s], [1.0 * s] * 3)  # ruptured mid-substance
    ligaments = (pcl + acl) - bones - cart - plateau
    layers += [(hoffa - tendon, "fat", "muscle"), (tendon + quad, "ligament", "muscle"),
               (meniscus, "ligament", "muscle"),
               (ligaments, "ligament", "muscle")]
    popliteal = geo.cylinder([0.0, -4.2 * s, 12.0 * s], [0.3 * s, -3.6 * s, -12.0 * s], 0.45 * s)
    layers.append((popliteal - bones, "blood", "muscle"))
    if abnormal:
        bursa = geo.ellipsoid([0.0, 2.9 * s, 7.0 * s], np.array([3.0, 1.1, 3.2]) * s * rng.uniform(0.7, 1.2))
        layers.append((bursa - bones - quad - hoffa, "fluid", "muscle"))
    rx = 6.8 * s + fat
    return layers, {"scale": s, "half_width": rx, "half_depth": rx}


def _femur(s, condyle_z):
    """Distal femur: shaft, flared metaphysis and two posterior condyles; outer (cortex) and inner (marrow)."""
    def parts(t):
        shaft = geo.cylinder([0.0, -0.6 * s, condyle_z + 4.0 * s], [0.0, -1.2 * s, 32.0 * s], 1.5 * s - t)
        meta = geo.ellipsoid([0.0, -0.4 * s, condyle_z + 2.2 * s], np.array([3.5, 2.6, 3.6]) * s - t)
        condyles = [geo.ellipsoid([side * 2.2 * s, -1.0 * s, condyle_z], np.array([2.0, 3.0, 2.4]) * s - t)
                    for side in (-1, 1)]
        return geo.union([shaft, meta] + condyles)

    return parts(0.0), parts(0.3 * s)


def _tibia(s, top):
    """Proximal tibia: plateau (flat top at ``top``, below the cartilage), tuberosity, shaft."""
    def parts(t):
        plateau = (geo.ellipsoid([0.0, -0.3 * s, top - 2.2 * s], np.array([3.8, 2.7, 3.0]) * s - t)
                   & geo.halfspace([0.0, 0.0, top - t], [0.0, 0.0, 1.0]))
        shaft = geo.cylinder([0.0, -0.2 * s, -3.5 * s], [0.0, 0.2 * s, -32.0 * s], 1.4 * s - t)
        tuberosity = geo.ellipsoid([0.2 * s, 1.6 * s, -4.6 * s], np.array([1.1, 1.0, 1.6]) * s - t)
        return geo.union([plateau, shaft, tuberosity])

    return parts(0.0), parts(0.3 * s)
