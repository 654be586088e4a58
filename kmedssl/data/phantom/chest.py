"""Chest phantom: anatomy drawn from sex and age, pathologies as 3-D changes, and the resulting tissue layers.

Patient coordinates in cm: x towards the patient's left, y anterior, z superior (origin near the carina).
The anatomy (``ChestAnatomy``) belongs to a subject; the findings (``ChestFindings``) belong to a study, so
follow-up studies share anatomy and may change pathology. ``chest_static_layers`` (subject and pose) and
``chest_study_layers`` (subject and study) give the layer trees of ``scene.build_scene``; the two
scenes together are the volume.
"""

import dataclasses

import numpy as np

from kmedssl.data.phantom import geometry as geo
from kmedssl.data.phantom.chest_bones import chest_bones
from kmedssl.data.phantom.imaging import projection_geometry
from kmedssl.data.phantom.shapes import frame, tree_segments

CHEST_LABELS = ("cardiomegaly", "effusion", "nodule", "pneumothorax", "consolidation", "atelectasis")
SIDES = (-1, 1)  # -1: patient's right, +1: patient's left
SIDE_NAMES = {-1: "right", 1: "left"}
POSES = ("pa", "ap", "arms_up")  # patient pose of an acquisition (arms, shoulders)


@dataclasses.dataclass(frozen=True)
class ChestAnatomy:
    """Subject-level anatomy (cm). ``s`` scales the skeleton and organs; ``fat`` is subcutaneous fat."""

    s: float
    fat: float
    bone: float
    heart: float
    heart_axis: tuple
    dome: float
    aorta: float
    lung_air: float
    breast: float
    cartilage_calcium: float
    gastric: tuple
    vessels: tuple  # per side: (p0 (n, 3), p1 (n, 3), radius (n,))


@dataclasses.dataclass(frozen=True)
class ChestFindings:
    """Study-level state: pathologies (empty tuple / None when absent) and the inspiration depth."""

    inspiration: float = 1.0
    cardiomegaly: float = 1.0
    effusion: tuple = ()  # (side, height, meniscus) per side
    nodules: tuple = ()  # (center (3,), radius, calcified)
    pneumothorax: tuple | None = None  # (side, collapse fraction)
    consolidation: tuple = ()  # (center (3,), radii (3,), angles (3,), density, fissure normal or None)
    atelectasis: tuple | None = None  # (side, dome raise, mediastinal shift, band center, band radii, yaw)

    @property
    def labels(self):
        """Multi-hot over CHEST_LABELS as floats."""
        present = (self.cardiomegaly > 1.0, bool(self.effusion), bool(self.nodules),
                   self.pneumothorax is not None, bool(self.consolidation), self.atelectasis is not None)
        return tuple(float(p) for p in present)


def sample_anatomy(rng, sex, age):
    """Draw a subject's chest anatomy; men are larger, bone density falls with age (faster in women)."""
    s = (1.0 if sex == "M" else 0.93) * rng.normal(1.0, 0.045)
    fat = rng.uniform(0.6, 3.2) + (0.5 if sex == "F" else 0.0)
    loss = 0.005 * max(age - 35.0, 0.0) + (0.006 * max(age - 50.0, 0.0) if sex == "F" else 0.0)
    bone = float(np.clip(rng.normal(1.0, 0.06) - loss, 0.5, 1.15))
    heart = rng.normal(1.0, 0.055) * (1.0 + 0.0015 * (age - 50.0))
    axis = (rng.normal(1.0, 0.08), rng.normal(0.55, 0.1), rng.normal(-0.75, 0.1))
    vessels = tuple(_vessel_tree(rng, side, s) for side in SIDES)
    gastric = (rng.uniform(0.6, 1.3), rng.uniform(-0.6, 0.9)) if rng.random() < 0.75 else ()
    dome = float(np.clip(rng.normal(-6.8, 0.8), -8.8, -5.2)) * s  # right hemidiaphragm top at rest
    return ChestAnatomy(
        s=s, fat=fat, bone=bone, heart=heart, heart_axis=axis, dome=dome,
        aorta=1.0 + 0.006 * max(age - 40.0, 0.0) + rng.normal(0.0, 0.05),
        lung_air=float(np.clip(0.002 * (age - 40.0) + rng.normal(0.02, 0.03), 0.0, 0.25)),
        breast=rng.uniform(0.6, 1.15) if sex == "F" else 0.0,
        cartilage_calcium=float(np.clip((age - 45.0) / 60.0 * rng.uniform(0.0, 1.5), 0.0, 0.6)),
        gastric=gastric, vessels=vessels,
    )


def _vessel_tree(rng, side, s):
    """Pulmonary vessels: four trunks from the hilum, each branching in two at every one of 5 generations,
    thinning fast (1 cm at the hilum, 2 mm at the periphery) so the lung markings fade outwards."""
    hilum = np.array([side * (4.3 if side < 0 else 4.5), 0.2, 2.0 if side < 0 else 2.8]) * s
    trunks = np.array([[0.35, 0.15, 0.9], [0.9, 0.35, -0.05], [0.45, -0.2, -0.85], [0.35, -0.75, -0.55]])
    trunks[:, 0] *= side
    return tree_segments(rng, hilum, trunks, length=3.8 * s, radius=0.45 * s, generations=5, shrink=0.76,
                         taper=0.66)


def sample_findings(rng, anatomy, present, previous=None):
    """Pathology geometry for the labels in ``present`` (a set of names); a persisting finding keeps its place.

    ``previous`` are the findings of the subject's previous study: a persisting finding keeps its side and
    geometry (effusion height and pneumothorax size are drawn again); the inspiration depth varies.
    """
    s = anatomy.s
    prev = previous or ChestFindings()
    out = {"inspiration": rng.uniform(0.93, 1.06)}
    if "cardiomegaly" in present:
        out["cardiomegaly"] = prev.cardiomegaly if prev.cardiomegaly > 1.0 else rng.uniform(1.14, 1.5)
    if "effusion" in present:
        sides = [e[0] for e in prev.effusion] or (list(SIDES) if rng.random() < 0.3 else [int(rng.choice(SIDES))])
        out["effusion"] = tuple((side, rng.uniform(1.0, 10.0) * s, rng.uniform(0.3, 0.9)) for side in sides)
    if "nodule" in present:
        out["nodules"] = prev.nodules or tuple(
            (_point_in_lung(rng, anatomy), float(np.exp(rng.uniform(np.log(0.4), np.log(1.7)))) * s,
             bool(rng.random() < 0.2))
            for _ in range(1 + int(rng.random() < 0.3) + int(rng.random() < 0.1)))
    if "pneumothorax" in present:
        side = prev.pneumothorax[0] if prev.pneumothorax else int(rng.choice(SIDES))
        out["pneumothorax"] = (side, float(np.exp(rng.uniform(np.log(0.08), np.log(0.5)))))
    if "consolidation" in present:
        out["consolidation"] = prev.consolidation or tuple(
            (_point_in_lung(rng, anatomy, low=True), rng.uniform(1.5, 5.0, 3) * s, rng.uniform(-np.pi, np.pi, 3),
             rng.uniform(0.45, 1.0), _unit(rng) if rng.random() < 0.5 else None)
            for _ in range(1 + int(rng.random() < 0.3)))
    if "atelectasis" in present:
        side = prev.atelectasis[0] if prev.atelectasis else int(rng.choice(SIDES))
        band_center = _point_in_lung(rng, anatomy, side=side, low=True)
        out["atelectasis"] = (side, rng.uniform(0.5, 4.0) * s, rng.uniform(0.0, 1.3) * s, band_center,
                              np.array([rng.uniform(2.5, 6.0), rng.uniform(2.0, 4.5), rng.uniform(0.25, 0.8)]) * s,
                              rng.uniform(-0.5, 0.5))
    return ChestFindings(**out)


def _unit(rng):
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _point_in_lung(rng, anatomy, side=None, low=False):
    """A point well inside one lung: in the shrunken lung ellipsoid, above the diaphragm, off the heart
    and the mediastinum (rejection sampling); ``low`` keeps the lower half."""
    side = int(rng.choice(SIDES)) if side is None else side
    s = anatomy.s
    center, radii = _lung_ellipsoid(anatomy, side, 1.0)
    dome = anatomy.dome - (1.4 * s if side > 0 else 0.0) + 2.0 * s
    heart = np.array([2.2 * s, 1.6 * s, anatomy.dome - 1.4 * s + 3.6 * s])
    # The dome is at most -5.2 s (see ``sample_anatomy``), so the accepted region is never empty.
    while True:
        p = center + rng.uniform(-1.0, 1.0, 3) * radii * 0.8
        inside = np.sum(((p - center) / (0.8 * radii)) ** 2) < 1.0
        clear = np.sum(((p - heart) / (np.array([7.5, 5.5, 5.5]) * s)) ** 2) > 1.0 and side * p[0] > 3.0 * s
        if inside and clear and p[2] > dome and (p[2] < center[2] + 0.25 * radii[2] or not low):
            return p


# === Geometry ===


def _cavity(a):
    return 13.0 * a.s, 9.0 * a.s  # thoracic cavity half-width, half-depth


def _lung_ellipsoid(a, side, inspiration):
    rxc, ryc = _cavity(a)
    apex = 12.5 * a.s
    lz = 14.5 * a.s * inspiration
    return np.array([side * 0.55 * rxc, 0.0, apex - lz]), np.array([0.47 * rxc, 0.98 * ryc, lz])


def _domes(a, f):
    """Top height of the right and left hemidiaphragm (atelectasis raises its side)."""
    right = a.dome - (f.inspiration - 1.0) * 12.0 * a.s
    top = {-1: right, 1: right - 1.4 * a.s}
    if f.atelectasis is not None:
        top[f.atelectasis[0]] += f.atelectasis[1]
    return top


def _dome_solid(a, side, top):
    rxc, ryc = _cavity(a)
    dz = 8.5 * a.s
    return geo.ellipsoid([side * 0.4 * rxc, 1.2 * a.s, top - dz], [0.7 * rxc, 1.2 * ryc, dz])


def _mediastinum(a, f, domes):
    """Heart (with blood pool and right atrium), aorta and superior vena cava, shifted by atelectasis."""
    s = a.s
    shift = 0.0 if f.atelectasis is None else f.atelectasis[0] * f.atelectasis[2]
    cm = f.cardiomegaly
    scale = a.heart * np.array([cm, cm, 1.0 + 0.4 * (cm - 1.0)])
    center = np.array([2.2 * s + shift + 2.5 * s * (cm - 1.0), 1.6 * s, domes[1] + 3.6 * s])
    rot = frame(a.heart_axis, [0.0, 0.0, 1.0])
    heart = geo.ellipsoid(center, np.array([7.0, 4.6, 4.7]) * s * scale, rot)
    pool = geo.ellipsoid(center, np.array([5.6, 3.3, 3.4]) * s * scale, rot)
    ra_scale = a.heart * (1.0 + 0.6 * (cm - 1.0))
    atrium = geo.ellipsoid([-2.5 * s + shift - 0.8 * s * (cm - 1.0), 1.0 * s, domes[-1] + 3.4 * s],
                           np.array([2.5, 3.0, 3.4]) * s * ra_scale)
    knob = geo.ellipsoid([2.4 * s + 0.5 * shift, -0.8 * s, 6.4 * s], np.array([1.6, 2.2, 1.5]) * s * a.aorta)
    descending = geo.cylinder([2.2 * s + 0.5 * shift, -1.8 * s, 6.2 * s], [1.6 * s, -3.2 * s, -22.0 * s],
                              1.1 * s * a.aorta)
    svc = geo.cylinder([-2.3 * s + shift, 0.8 * s, 11.0 * s], [-2.5 * s + shift, 1.0 * s, domes[-1] + 5.0 * s],
                       1.0 * s)
    return {"heart": heart, "pool": pool, "atrium": atrium, "knob": knob, "descending": descending,
            "svc": svc, "shift": shift}


def _lung_region(a, f, side, domes, med):
    """One lung: an ellipsoid cut by the diaphragm, the heart and the great vessels."""
    center, radii = _lung_ellipsoid(a, side, f.inspiration)
    lung = geo.ellipsoid(center, radii)
    cutters = [_dome_solid(a, side, domes[side]), med["heart"], med["atrium"]]
    cutters += [med["knob"], med["descending"]] if side > 0 else [med["svc"]]
    for cutter in cutters:
        lung = lung - cutter
    return lung, center, radii


# === Layers ===


def chest_static_layers(a, pose):
    """Layers that depend on the subject and the patient's pose only: body envelope, arms, skeleton.

    ``pose`` is "pa" (arms down, shoulders rolled forward so the scapulae clear the lungs), "ap" (arms
    down, scapulae over the upper lungs) or "arms_up" (arms raised: lateral views, CT and MR).
    """
    if pose not in POSES:
        raise ValueError(f"Expected pose in {POSES}. Received: pose={pose!r}")
    return _body_layers(a, pose == "arms_up") + chest_bones(a, pose)


def chest_study_layers(a, f):
    """Layers that depend on the study: diaphragm, heart and vessels, airways, lungs and their findings."""
    return [layer for _, layer in chest_study_parts(a, f)]


def chest_study_parts(a, f):
    """The layers of ``chest_study_layers``, in the same order, each with a name: a list of (name, layer).

    Names: "liver_dome" and "spleen_dome" (below the right and left hemidiaphragm), "gastric_fluid",
    "gastric_air", "heart" (myocardium), "blood_pool", "right_atrium", "aorta", "svc", "airways"; then per
    lung, with the suffix "_right" or "_left": "lung" (the whole pleural space; the other parts of that
    lung lie inside it), "effusion" (pleural fluid), "pneumothorax" (pleural air), "collapsed_lung" (the
    aerated lung under a pneumothorax), "vessels", "consolidation" and "nodule" (one part each), "atelectasis".
    """
    s = a.s
    domes = _domes(a, f)
    med = _mediastinum(a, f, domes)
    dome_r = _dome_solid(a, -1, domes[-1])
    dome_l = _dome_solid(a, 1, domes[1]) - dome_r
    parts = [("liver_dome", (dome_r, "liver", "muscle")), ("spleen_dome", (dome_l, "spleen", "muscle"))]
    if a.gastric:
        size, level = a.gastric
        rxc, _ = _cavity(a)
        c = np.array([0.45 * rxc, 1.0 * s, domes[1] - 3.2 * s * size])
        bubble = geo.ellipsoid(c, np.array([3.4, 3.0, 2.4]) * s * size) & dome_l
        gas = bubble & geo.halfspace(c + [0.0, 0.0, level * s], [0.0, 0.0, -1.0])
        parts += [("gastric_fluid", (bubble - gas, "fluid", "spleen")), ("gastric_air", (gas, "air", "spleen"))]
    heart = med["heart"] - dome_r - dome_l
    parts += [("heart", (heart, "myocardium", "muscle")),
              ("blood_pool", (med["pool"] - dome_r - dome_l, "blood", "myocardium")),
              ("right_atrium", (med["atrium"] - med["heart"] - dome_r, "blood", "muscle")),
              ("aorta", (med["knob"] + (med["descending"] - med["knob"]), "blood", "muscle")),
              ("svc", (med["svc"] - med["atrium"], "blood", "muscle"))]
    parts.append(("airways", _airway_layer(s, med["shift"])))
    lung_tissue = {"lung": 1.0 - a.lung_air, "air": a.lung_air}
    for side in SIDES:
        lung, center, radii = _lung_region(a, f, side, domes, med)
        parts.append((f"lung_{SIDE_NAMES[side]}", (lung, lung_tissue, "muscle")))
        parts += [(f"{name}_{SIDE_NAMES[side]}", layer)
                  for name, layer in _lung_findings(a, f, side, lung, center, radii, domes, lung_tissue)]
    return parts


def _body_layers(a, arms_up):
    """Skin-fat envelope and muscle core: torso, shoulders, neck, arms (down, or raised for a lateral), breasts."""
    s, fat = a.s, a.fat

    def parts(inset):
        rx, ry = 15.3 * s + fat - inset, 10.4 * s + 0.8 * fat - inset
        torso = (geo.cylinder([0.0, 0.0, -36.0 * s], [0.0, 0.0, 14.0 * s], [rx, ry], up=[1.0, 0.0, 0.0])
                 & geo.ellipsoid([0.0, 0.0, -6.0 * s], [rx * 1.1, ry * 1.15, 21.0 * s - inset]))
        out = [torso, geo.cylinder([0.0, 0.3 * s, 10.0 * s], [0.0, 1.5 * s, 32.0 * s],
                                   [5.0 * s + 0.5 * fat - inset, 5.6 * s + 0.5 * fat - inset], up=[1.0, 0.0, 0.0])]
        for side in SIDES:
            # Raised arms pull the shoulder girdle up and in.
            if arms_up:
                shoulder, size = [side * (rx - 4.5 * s), -0.5 * s, 14.0 * s], np.array([5.0, 5.0, 4.0]) * s
            else:
                shoulder, size = [side * (rx - 3.0 * s), -0.5 * s, 10.0 * s], np.array([6.5, 5.5, 4.5]) * s
            out.append(geo.ellipsoid(shoulder, size + 0.5 * fat - inset))
            hand = [side * 9.0 * s, 14.0 * s, 48.0 * s] if arms_up else [side * (rx + 5.0 * s), 1.0 * s, -24.0 * s]
            top = [side * (rx - 1.5 * s), 1.0, 14.0 * s] if arms_up else [side * (rx + 0.5 * s), -0.5 * s, 12.0 * s]
            out.append(geo.cylinder(top, hand, 3.8 * s + 0.5 * fat - inset))
        return geo.union(out)

    envelope, core = parts(0.0), parts(a.fat)
    layers = [(envelope, "fat", "air"), (core, "muscle", "fat")]
    if a.breast:
        for side in SIDES:
            breast = geo.ellipsoid([side * 7.5 * s, 10.4 * s + 0.8 * fat - 2.0 * s, -6.0 * s],
                                   np.array([6.5, 3.6, 5.5]) * s * a.breast, geo.rotation(0.0, 0.0, -0.3))
            layers.append((breast - envelope, {"fat": 0.7, "muscle": 0.3}, "air"))
    return layers


def trachea_axis(s, shift):
    """End points (cm) of the trachea's centre line: the upper end and the carina (the lower end, where the
    main bronchi leave); ``shift`` is the mediastinal shift (atelectasis), which moves the carina fully."""
    return np.array([shift * 0.5, 1.4 * s, 22.0 * s]), np.array([shift, 0.4 * s, 5.5 * s])


def _airway_layer(s, shift):
    trachea = geo.cylinder(*trachea_axis(s, shift), 0.85 * s)
    bronchi = [geo.cylinder([shift, 0.4 * s, 5.6 * s], [side * 1.9 * s + shift, 0.0, 3.6 * s + 0.4 * s * side],
                            0.6 * s)
               for side in SIDES]
    return geo.union([trachea] + bronchi), "air", "muscle"


def _lung_findings(a, f, side, lung, center, radii, domes, lung_tissue):
    """Fluid, air, dense and nodular layers inside one lung (children of the lung tissue): (name, layer) pairs."""
    s = a.s
    rxc, ryc = _cavity(a)
    layers = []
    free = lung
    for eff_side, height, meniscus in f.effusion:
        if eff_side != side:
            continue
        # Fluid fills the base up to a central level and climbs the chest wall above it (the meniscus):
        # the lung below ``top`` minus a bowl whose cross-section matches the lung's at ``top`` and
        # narrows below it, so the fluid layer on the wall thins to nothing at ``top``.
        top = domes[side] - 4.0 * s + height
        level = top - meniscus * min(height, 4.0 * s)
        rz = 1.5 * (top - level) + 4.0 * s
        fit = np.sqrt(max(1.0 - ((top - center[2]) / radii[2]) ** 2, 0.05))
        fit /= np.sqrt(1.0 - ((top - level - rz) / rz) ** 2)
        bowl = geo.ellipsoid([center[0], center[1], level + rz], [fit * radii[0], fit * radii[1], rz])
        layers.append(("effusion", ((lung & geo.halfspace([0.0, 0.0, top], [0.0, 0.0, 1.0])) - bowl, "fluid",
                                    lung_tissue)))
        free = (free & geo.halfspace([0.0, 0.0, top], [0.0, 0.0, -1.0])) + (free & bowl & geo.halfspace(
            [0.0, 0.0, top], [0.0, 0.0, 1.0]))
    aerated = free
    if f.pneumothorax is not None and f.pneumothorax[0] == side:
        frac = f.pneumothorax[1]
        anchor = np.array([side * 0.25 * rxc, -0.1 * ryc, domes[side] + 2.0 * s])
        shrunk = geo.ellipsoid(anchor + (center - anchor) * (1.0 - frac),
                               radii * np.array([1.0 - frac, 1.0 - 0.5 * frac, 1.0 - 0.8 * frac]))
        layers.append(("pneumothorax", (free - shrunk, "air", lung_tissue)))
        aerated = free & shrunk
        layers.append(("collapsed_lung", (aerated, {"lung": 0.85, "muscle": 0.15}, lung_tissue)))
        lung_tissue = {"lung": 0.85, "muscle": 0.15}
    p0, p1, r = a.vessels[0 if side < 0 else 1]
    layers.append(("vessels", (geo.cylinders(p0, p1, np.stack([r, r], 1)) & aerated, "blood", lung_tissue)))
    for c, radii_c, angles, density, fissure in f.consolidation:
        if np.sign(c[0]) != side:
            continue
        blob = geo.ellipsoid(c, radii_c, geo.rotation(*angles))
        if fissure is not None:
            blob = blob & geo.halfspace(c + 0.3 * radii_c.min() * fissure, fissure)
        layers.append(("consolidation", (blob & aerated, {"lung": 1.0 - density, "fluid": density}, lung_tissue)))
    for c, radius, calcified in f.nodules:
        if np.sign(c[0]) == side:
            tissue = {"lesion": 0.4, "calcium": 0.6} if calcified else "lesion"
            layers.append(("nodule", (geo.ellipsoid(c, [radius] * 3) & aerated, tissue, lung_tissue)))
    if f.atelectasis is not None and f.atelectasis[0] == side:
        _, _, _, band_c, band_r, yaw = f.atelectasis
        band = geo.ellipsoid(band_c, band_r, geo.rotation(yaw, 0.15, 0.0))
        layers.append(("atelectasis", (band & aerated, {"lung": 0.25, "muscle": 0.75}, lung_tissue)))
    return layers


# === Acquisition ===


def body_half_size(a):
    """Half-width and half-depth (cm) of the torso's skin outline."""
    return 15.3 * a.s + a.fat, 10.4 * a.s + 0.8 * a.fat


def chest_projection(a, view, rng):
    """Radiograph geometry of one view: PA (beam posterior -> anterior, SID 180 cm), AP (portable,
    anterior -> posterior, SID 100-120 cm, so the heart is magnified more), LATERAL / LL (beam from the
    right, the left side against the detector, SID 180 cm; displayed with anterior on the left)."""
    rx, ry = body_half_size(a)
    fov = 2.0 * rx * rng.uniform(1.15, 1.3)
    iso = [0.0, 0.0, -1.5 * a.s]
    down = [0.0, 0.0, -1.0]
    if view == "PA":
        return projection_geometry([0, 1, 0], iso, ry + 1.5, rng.uniform(170, 185), [1, 0, 0], down, fov, rng)
    if view == "AP":
        return projection_geometry([0, -1, 0], iso, ry + 2.0, rng.uniform(100, 120), [1, 0, 0], down, fov, rng,
                                   jitter=1.6)
    if view in ("LATERAL", "LL"):
        return projection_geometry([1, 0, 0], iso, rx + 1.5, rng.uniform(170, 185), [0, -1, 0], down, fov, rng)
    raise ValueError(f"Expected view in ('PA', 'AP', 'LATERAL', 'LL'). Received: view={view!r}")
