"""Head phantom: scalp, skull (outer table, diploë, inner table), CSF, cortex with sulci, white matter,
deep grey nuclei, ventricles, cerebellum, brainstem, orbits and sinuses.

Coordinates in cm: x to the patient's left, y anterior, z superior, origin at the centre of the brain.
Age brings atrophy (a thinner cortex mantle, wider sulci, larger ventricles); ``abnormal`` adds a tumour
with surrounding oedema in the white matter.
"""

import numpy as np

from kmedssl.data.phantom import geometry as geo


def head_layers(rng, sex, age, abnormal):
    """Tissue layers of one head and its size: (layers, {"scale", "half_width", "half_depth"})."""
    s = (1.0 if sex == "M" else 0.95) * rng.normal(1.0, 0.035)
    atrophy = float(np.clip((age - 35.0) / 60.0, 0.0, 0.8) * rng.uniform(0.5, 1.5))
    head = np.array([7.6, 9.6, 8.0]) * s * rng.normal(1.0, 0.02, 3)
    loss = 0.004 * max(age - 35.0, 0.0)
    bone = float(np.clip(rng.normal(1.0, 0.05) - loss, 0.6, 1.15))
    face_c = np.array([0.0, 4.8, -5.8]) * s
    face = geo.ellipsoid(face_c, np.array([6.2, 5.2, 5.0]) * s)
    scalp = geo.union([geo.ellipsoid([0.0, 0.0, 0.0], head), face])
    skull = geo.ellipsoid([0.0, 0.0, 0.0], head - 0.6 * s)
    diploe = geo.ellipsoid([0.0, 0.0, 0.0], head - 0.85 * s)
    cavity = geo.ellipsoid([0.0, 0.0, 0.0], head - 1.15 * s)
    brain_r = head - (1.35 + 0.6 * atrophy) * s
    brain = geo.ellipsoid([0.0, 0.0, 0.0], brain_r)
    white_r = brain_r * (0.74 + 0.03 * atrophy) - (0.35 + 0.4 * atrophy) * s
    white = geo.ellipsoid([0.0, 0.0, 0.3 * s], white_r)
    cortex = {"bone": 0.8 * bone, "marrow": 1.0 - 0.8 * bone}
    layers = [(scalp, {"fat": 0.5, "muscle": 0.5}, "air"), (skull, cortex, {"fat": 0.5, "muscle": 0.5}),
              (diploe, {"marrow": 0.8, "bone": 0.2}, cortex), (cavity, "csf", {"marrow": 0.8, "bone": 0.2}),
              (brain, "grey_matter", "csf"), (white, "white_matter", "grey_matter")]
    layers += _sulci(rng, s, brain_r, white, atrophy)
    layers += _deep_structures(s, atrophy, abnormal, rng, white, brain_r, head - 1.15 * s)
    layers += _face(s, face_c, skull)
    return layers, {"scale": s, "half_width": head[0], "half_depth": head[1]}


def _sulci(rng, s, brain_r, white, atrophy):
    """CSF clefts cutting into the cortex (wider with atrophy) and the interhemispheric fissure."""
    n = 36
    d = rng.normal(size=(n, 3))
    d[:, 2] = np.abs(d[:, 2]) + 0.2  # mostly over the convexity
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    centers = d * brain_r * 0.97
    rot = []
    for normal in d:
        tangent = np.cross(normal, rng.normal(size=3))
        tangent /= np.linalg.norm(tangent)
        rot.append(np.stack([np.cross(tangent, normal), tangent, normal], axis=1))
    width = (0.12 + 0.25 * atrophy) * s
    clefts = geo.ellipsoids(centers, np.tile([width, 2.2 * s, 1.4 * s], (n, 1)), np.array(rot))
    fissure = geo.ellipsoid([0.0, 0.0, 2.0 * s], [width, brain_r[1], brain_r[2]]) & geo.halfspace(
        [0.0, 0.0, 0.5 * s], [0.0, 0.0, -1.0])
    grey_only = geo.ellipsoid([0.0, 0.0, 0.0], brain_r) - white
    return [((clefts + fissure) & grey_only, "csf", "grey_matter")]


def _deep_structures(s, atrophy, abnormal, rng, white, brain_r, cavity_r):
    """Lateral and third ventricles, caudate, lentiform nuclei and thalami; cerebellum and brainstem; tumour."""
    v = 1.0 + 1.2 * atrophy
    layers = []
    nuclei, ventricles = [], []
    for side in (-1, 1):
        ventricles += [geo.ellipsoid([side * 1.1 * s, 0.6 * s, 1.6 * s], np.array([0.55 * v, 3.4, 0.8 * v]) * s),
                       geo.ellipsoid([side * 1.3 * s, 3.0 * s, 0.9 * s], np.array([0.6 * v, 1.4, 0.9 * v]) * s,
                                     geo.rotation(0.0, 0.0, 0.3)),
                       geo.ellipsoid([side * 2.2 * s, -3.2 * s, 0.2 * s], np.array([0.5 * v, 1.6, 1.2 * v]) * s,
                                     geo.rotation(side * 0.4, 0.0, 0.5))]
        nuclei += [geo.ellipsoid([side * 2.1 * s, 2.4 * s, 0.9 * s], np.array([0.6, 1.1, 0.9]) * s),
                   geo.ellipsoid([side * 3.2 * s, 0.8 * s, -0.3 * s], np.array([0.9, 1.8, 1.2]) * s),
                   geo.ellipsoid([side * 1.3 * s, -1.0 * s, -0.2 * s], np.array([0.9, 1.4, 0.9]) * s)]
    ventricles.append(geo.ellipsoid([0.0, 0.0, -0.6 * s], np.array([0.22 * v, 1.5, 0.9]) * s))
    csf = geo.concat(ventricles) & white
    deep = geo.concat(nuclei) & white
    layers += [(csf, "csf", "white_matter"), (deep - csf, "grey_matter", "white_matter")]
    # The cerebellum is the back of the grey brain volume: a white-matter core under a CSF tentorium.
    brain = geo.ellipsoid([0.0, 0.0, 0.0], brain_r)
    cavity = geo.ellipsoid([0.0, 0.0, 0.0], cavity_r)
    core = geo.ellipsoid([0.0, -5.0 * s, -4.4 * s], np.array([2.6, 1.4, 0.9]) * s)
    tentorium = geo.ellipsoid([0.0, -5.0 * s, -2.3 * s], np.array([4.6, 3.0, 0.12 + 0.1 * atrophy]) * s)
    stem = geo.cylinder([0.0, -1.6 * s, -1.8 * s], [0.0, -2.4 * s, -8.0 * s], 1.1 * s)
    layers += [((core - white) & brain, "white_matter", "grey_matter"),
               ((tentorium - white - core) & brain, "csf", "grey_matter"),
               ((stem & brain) - white - core - tentorium, "white_matter", "grey_matter"),
               ((stem & cavity) - brain, "white_matter", "csf")]
    if abnormal:
        side = rng.choice([-1.0, 1.0])
        c = np.array([side * rng.uniform(1.5, 3.5), rng.uniform(-4.0, 4.0), rng.uniform(0.5, 3.5)]) * s
        tumour = geo.ellipsoid(c, [rng.uniform(0.8, 1.8) * s] * 3) & white
        oedema = geo.ellipsoid(c, [2.6 * s] * 3, geo.rotation(*rng.uniform(-1, 1, 3))) & white
        layers += [(oedema - tumour - csf - deep, {"white_matter": 0.5, "fluid": 0.5}, "white_matter"),
                   (tumour - csf - deep, "lesion", "white_matter")]
    return layers


def _face(s, c, skull):
    """Globes with lenses in fat-filled orbits, maxillary and frontal sinuses, the nasal cavity."""
    layers = []
    for side in (-1, 1):
        orbit = geo.ellipsoid(c + np.array([side * 3.0, 2.3, 2.2]) * s, np.array([1.7, 2.0, 1.6]) * s) - skull
        globe = geo.ellipsoid(c + np.array([side * 3.0, 2.8, 2.2]) * s, [1.2 * s] * 3)
        lens = geo.ellipsoid(c + np.array([side * 3.0, 3.7, 2.2]) * s, np.array([0.45, 0.2, 0.45]) * s)
        sinus = geo.ellipsoid(c + np.array([side * 2.4, 1.5, -1.2]) * s, np.array([1.4, 1.6, 1.5]) * s)
        layers += [(orbit, "fat", {"fat": 0.5, "muscle": 0.5}), (globe & orbit, "fluid", "fat"),
                   (lens & globe & orbit, "muscle", "fluid"), (sinus - skull, "air", {"fat": 0.5, "muscle": 0.5})]
    nasal = geo.ellipsoid(c + np.array([0.0, 2.8, -0.3]) * s, np.array([0.8, 2.2, 1.8]) * s) - skull
    return layers + [(nasal, "air", {"fat": 0.5, "muscle": 0.5})]
