"""Dense ground truth of the chest phantom: per-structure masks and named landmarks of every rendered view.

The phantom knows its anatomy exactly, so every radiograph ``ChestCohort.render(record, size)`` comes with

* **masks**: one boolean (size, size) array per structure. A structure is a 3-D solid of the study's
  volume (the very solids the renderer integrates over), and a pixel is in its mask iff the ray from the
  source to that pixel's centre crosses the solid: the chord length, computed by the renderer's own
  ``scene.line_integrals`` with the same cone-beam geometry, exceeds ``MIN_CHORD``. Masks are projections,
  so they overlap (a lung lies in front of and behind the heart; a lateral view superimposes both lungs).
* **landmarks**: named 3-D points of the model (``LANDMARKS``), projected through the same geometry to
  pixel coordinates ``(x, y)`` = (column, row), pixel centres at integers, plus a visibility flag.

Structures (``STRUCTURES``; built from the named layers of ``chest.chest_study_parts``; sides are the
patient's):

    lung_right, lung_left      the pleural space of each lung (lung ellipsoid cut by the hemidiaphragm,
                               heart, right atrium and great vessels); its findings lie inside it
    heart                      the cardiac silhouette: myocardium ellipsoid and right atrium, cut by the
                               hemidiaphragms
    clavicle_right, _left      the clavicle's cylinders (``chest_bones.clavicle``)
    airways                    trachea and main bronchi
    effusion, pneumothorax,    the finding's solids, both sides together (``CHEST_LABELS`` names); empty
    nodule, consolidation,     when the study does not have the finding. ``pneumothorax`` is the pleural
    atelectasis                air, which surrounds the collapsed lung, so its projection covers most of
                               the hemithorax
    pneumothorax_visible       pixels whose ray crosses the pleural air and no aerated lung of that side:
                               the marking-free rim a reader outlines (SIIM-ACR style); the only mask
                               that is not the projection of one solid
    (cardiomegaly)             no structure of its own: it is the heart's size, seen in the ``heart`` mask

Every structure the dense-task issue names (lungs, heart, clavicles, pneumothorax, effusion, nodule,
consolidation) is modelled. A mask samples one ray per pixel centre, so a structure smaller than a pixel
(a 4 mm nodule at 64 px) may give an empty mask.

Every finding is clipped to the part of the lung it is rendered in (a nodule under an effusion's fluid
is not rendered, so it is not in the mask). Landmarks (``LANDMARKS``; all points of the 3-D model, cm):

    carina                     lower end of the trachea's centre line, where the main bronchi leave
                               (``chest.trachea_axis``; moves with the mediastinal shift)
    lung_apex_*                highest point of the lung's pleural space
    costophrenic_angle_*       in the coronal plane through the lung's centre, the lowest point of the
                               lung's lateral wall: where it meets the hemidiaphragm
    diaphragm_dome_*           highest point of the hemidiaphragm where it borders the lung (its top, or
                               where the heart resting on it meets the lung)
    heart_border_*             the points of the cardiac silhouette farthest to the patient's right (right
                               atrium) and left (left ventricle); silhouette points in frontal views only
    clavicle_head_*            sternal (medial) end of the clavicle's centre line

A landmark is ``visible`` when its projection falls inside the image (every landmark is projected in
every view; a lateral view superimposes the right and left ones). Everything is a function of the
cohort's seed and the record, like the image itself, and is vectorised NumPy (no Keras).

Example:
    >>> from kmedssl.data.phantom import ChestCohort
    >>> cohort = ChestCohort(num_subjects=5, seed=0)
    >>> truth = cohort.ground_truth(cohort.records[0], image_size=64)
    >>> truth.masks["lung_right"].shape, truth.landmarks["carina"].visible
    ((64, 64), True)
"""

import dataclasses

import numpy as np

from kmedssl.data.phantom import chest
from kmedssl.data.phantom import geometry as geo
from kmedssl.data.phantom import scene as scene_lib
from kmedssl.data.phantom import tissues
from kmedssl.data.phantom.chest_bones import clavicle

FINDING_STRUCTURES = ("effusion", "pneumothorax", "nodule", "consolidation", "atelectasis")
STRUCTURES = ("lung_right", "lung_left", "heart", "clavicle_right", "clavicle_left", "airways",
              *FINDING_STRUCTURES, "pneumothorax_visible")
LANDMARKS = ("carina", "lung_apex_right", "lung_apex_left", "costophrenic_angle_right", "costophrenic_angle_left",
             "diaphragm_dome_right", "diaphragm_dome_left", "heart_border_right", "heart_border_left",
             "clavicle_head_right", "clavicle_head_left")
LANDMARK_STRUCTURES = {  # the structure a landmark lies on (its pixel is in or beside that mask)
    "carina": "airways", "lung_apex_right": "lung_right", "lung_apex_left": "lung_left",
    "costophrenic_angle_right": "lung_right", "costophrenic_angle_left": "lung_left",
    "diaphragm_dome_right": "lung_right", "diaphragm_dome_left": "lung_left",
    "heart_border_right": "heart", "heart_border_left": "heart",
    "clavicle_head_right": "clavicle_right", "clavicle_head_left": "clavicle_left",
}
MIN_CHORD = 1e-3  # cm: a ray crosses a structure when its chord through it is longer (float32 chords: ~2e-5 cm)

_UNIT = tissues.weights("bone")  # property 1 inside a (solid, "bone", "air") layer: line integral = chord (cm)
_SURFACE_SAMPLES = 3000


@dataclasses.dataclass(frozen=True)
class Landmark:
    """A projected landmark: ``x`` (column) and ``y`` (row) in pixels, pixel centres at integers (the image
    spans -0.5 .. size - 0.5); ``visible`` when inside the image; ``point`` the 3-D point (cm)."""

    x: float
    y: float
    visible: bool
    point: tuple


@dataclasses.dataclass(frozen=True)
class ChestGroundTruth:
    """Masks ({name: (size, size) bool}, keys ``STRUCTURES``) and landmarks ({name: Landmark}, ``LANDMARKS``)."""

    masks: dict
    landmarks: dict


# === Entry points ===


def view_ground_truth(anatomy, findings, geometry, image_size, study=None):
    """Masks and landmarks of one view of a study (``ChestAnatomy``, ``ChestFindings``) taken with
    ``geometry`` (``imaging.projection_geometry``) at ``image_size`` pixels; ``study`` is the study's
    (solids, landmark points) when already built."""
    solids, points = study_ground_truth(anatomy, findings) if study is None else study
    masks = project_masks({name: solids[name] for name in STRUCTURES if name in solids}, geometry, image_size)
    rim = project_masks({"collapsed_lung": solids["collapsed_lung"]}, geometry, image_size)["collapsed_lung"]
    masks["pneumothorax_visible"] = masks["pneumothorax"] & ~rim
    xy = project_points(np.stack([points[name] for name in LANDMARKS]), geometry, image_size)
    inside_image = np.all((xy >= -0.5) & (xy < image_size - 0.5), axis=1)
    landmarks = {name: Landmark(x=float(x), y=float(y), visible=bool(ok), point=tuple(float(c) for c in points[name]))
                 for name, (x, y), ok in zip(LANDMARKS, xy, inside_image)}
    return ChestGroundTruth(masks={name: masks[name] for name in STRUCTURES}, landmarks=landmarks)


# === 3-D structures and landmarks ===


def study_ground_truth(anatomy, findings):
    """``(solids, landmark points)`` of a study, shared by its views (``ChestCohort.ground_truth`` caches it)."""
    solids = chest_structures(anatomy, findings)
    return solids, chest_landmark_points(anatomy, findings, solids)


def chest_structures(anatomy, findings):
    """The 3-D solids (``geometry.Solid``) of ``STRUCTURES`` (less ``pneumothorax_visible``) and of
    "collapsed_lung", taken from the layers the renderer builds (``chest.chest_study_parts``)."""
    parts = {}
    for name, (solid, _, _) in chest.chest_study_parts(anatomy, findings):
        parts.setdefault(name, []).append(solid)

    def part(name):
        # Parts of one name are disjoint but for overlapping nodules or consolidations: harmless, as a mask
        # needs a chord > 0 and ``inside`` a sum > 1/2.
        return geo.concat(parts.get(name, []))

    out = {"lung_right": part("lung_right"), "lung_left": part("lung_left"),
           "heart": part("heart") + part("right_atrium"), "airways": part("airways"),
           "liver_dome": part("liver_dome"), "spleen_dome": part("spleen_dome")}
    for side in chest.SIDES:
        out[f"clavicle_{chest.SIDE_NAMES[side]}"] = clavicle(anatomy.s, side)[1]
    for name in FINDING_STRUCTURES + ("collapsed_lung",):
        out[name] = part(f"{name}_right") + part(f"{name}_left")
    return out


def chest_landmark_points(anatomy, findings, solids=None):
    """{name: (3,) point in cm} for ``LANDMARKS`` (definitions in the module docstring); ``solids`` are
    ``chest_structures(anatomy, findings)`` when already built."""
    solids = chest_structures(anatomy, findings) if solids is None else solids
    med = chest._mediastinum(anatomy, findings, chest._domes(anatomy, findings))
    up, right = np.array([0.0, 0.0, 1.0]), np.array([-1.0, 0.0, 0.0])
    points = {"carina": chest.trachea_axis(anatomy.s, med["shift"])[1]}
    for side, dome in ((-1, "liver_dome"), (1, "spleen_dome")):
        name = chest.SIDE_NAMES[side]
        lung = solids[f"lung_{name}"]
        points[f"lung_apex_{name}"] = extreme_point(lung, [_first_ellipsoid(lung)], up)
        points[f"costophrenic_angle_{name}"] = _costophrenic(lung, side)
        points[f"diaphragm_dome_{name}"] = extreme_point(lung, [_first_ellipsoid(solids[dome])], up, outside=True)
        points[f"clavicle_head_{name}"] = clavicle(anatomy.s, side)[0][0]
    cardiac = [_first_ellipsoid(med["heart"]), _first_ellipsoid(med["atrium"])]
    points["heart_border_right"] = extreme_point(solids["heart"], cardiac, right)
    points["heart_border_left"] = extreme_point(solids["heart"], cardiac, -right)
    return points


def _first_ellipsoid(solid):
    """(center, mat) of the first atom of the first term: the ellipsoid a solid ``E - cutters`` starts from."""
    return solid.center[0, 0], solid.mat[0, 0]


def extreme_point(region, ellipsoids, direction, outside=False, samples=_SURFACE_SAMPLES, rounds=2):
    """The point of the ellipsoids' surfaces on the region's boundary farthest along ``direction``.

    Args:
        region: a ``geometry.Solid`` whose boundary contains parts of the ellipsoids' surfaces.
        ellipsoids: (center (3,), mat (3, 3)) pairs, the ellipsoid ``|mat (p - center)| <= 1``.
        direction: (3,) direction to maximise.
        outside: False when the region lies inside the ellipsoids there (they bound it: a lung's top),
            True when it lies outside them (they cut it: the hemidiaphragm under a lung).

    Returns:
        (3,) float64: the farthest of the ellipsoids' exact extreme points ``c + A A^T n / |A^T n|``
        (A = mat^-1) when it is on the region's boundary; else the best surface point found by a
        Fibonacci lattice of ``samples`` points on each surface, refined ``rounds`` times by a lattice on
        a cap three lattice spacings wide around the best point (about ten times finer each round); NaN
        when no surface point is on the boundary.
    """
    direction = np.asarray(direction, float)
    nudge = -1e-6 if outside else 1e-6  # a boundary point moved this fraction of the way to its centre stays in
    centers = np.stack([np.asarray(center, float) for center, _ in ellipsoids])
    axes = np.stack([np.linalg.inv(mat) for _, mat in ellipsoids])  # (e, 3, 3): unit sphere -> ellipsoid
    g = np.einsum("eji,j->ei", axes, direction)  # A^T n
    exact = centers + np.einsum("eij,ej->ei", axes, g) / np.linalg.norm(g, axis=1, keepdims=True)
    best = int(np.argmax(exact @ direction))
    if _on_boundary(region, exact[best:best + 1], centers[best], nudge)[0]:
        return exact[best]
    found = np.full(3, np.nan)
    for center, axis in zip(centers, axes):
        units, spacing = _fibonacci_sphere(samples), np.sqrt(4.0 * np.pi / samples)
        for step in range(rounds + 1):
            points = center + units @ axis.T
            keep = _on_boundary(region, points, center, nudge)
            if not keep.any():
                break
            j = np.flatnonzero(keep)[np.argmax(points[keep] @ direction)]
            if np.isnan(found[0]) or points[j] @ direction > found @ direction:
                found = points[j]
            if step < rounds:
                units, spacing = _fibonacci_cap(samples, 3.0 * spacing, units[j]), 3.0 * spacing * np.sqrt(
                    np.pi / samples)
    return found


def _costophrenic(lung, side, samples=512, rounds=3):
    """Lowest point of the lung ellipsoid's lateral half, in the coronal plane through its centre, that
    lies on the lung's boundary: where the lateral wall enters the hemidiaphragm's cut. Sampled on the
    ellipse, then ``rounds`` times resampled between the lowest kept sample and the one below it
    (``samples`` times finer each round)."""
    center, mat = _first_ellipsoid(lung)

    def ellipse(theta):  # points with |mat (p - c)| = 1, angle -pi/2 (bottom) .. pi/2 (top), lateral side
        rays = np.stack([side * np.cos(theta), np.zeros_like(theta), np.sin(theta)], 1)
        return center + rays / np.linalg.norm(rays @ mat.T, axis=1, keepdims=True)

    theta = np.linspace(-np.pi / 2, np.pi / 2, samples)
    for step in range(rounds + 1):
        keep = _on_boundary(lung, ellipse(theta), center)
        if not keep.any():
            return np.full(3, np.nan)
        first = int(np.argmax(keep))  # the lowest kept sample: z rises with the angle on this half
        if first == 0 or step == rounds:
            return ellipse(theta[first:first + 1])[0]
        theta = np.linspace(theta[first - 1], theta[first], samples)  # from cut away to kept


def _on_boundary(region, points, center, nudge=1e-6):
    """Whether points (n, 3) on an ellipsoid's surface lie on the region's closure: they are in ``region``
    when moved ``nudge`` of the way to the ellipsoid's ``center`` (negative: away from it)."""
    return inside(region, points + nudge * (center - points))


def _fibonacci_sphere(n):
    """(n, 3) nearly uniform points on the unit sphere."""
    return _fibonacci_cap(n, np.pi, np.array([0.0, 0.0, 1.0]))


def _fibonacci_cap(n, angle, pole):
    """(n + 1, 3) nearly uniform unit vectors within ``angle`` (radians) of the unit vector ``pole``, and the pole."""
    k = np.arange(n) + 0.5
    z = 1.0 - (1.0 - np.cos(angle)) * k / n
    r = np.sqrt(np.maximum(1.0 - z * z, 0.0))
    phi = np.pi * (1.0 + np.sqrt(5.0)) * k
    local = np.concatenate([np.stack([r * np.cos(phi), r * np.sin(phi), z], 1), [[0.0, 0.0, 1.0]]])
    helper = np.array([1.0, 0.0, 0.0]) if abs(pole[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    b1 = np.cross(helper, pole)
    b1 /= np.linalg.norm(b1)
    return local @ np.stack([b1, np.cross(pole, b1), pole])


def inside(solid, points):
    """Whether each of ``points`` (n, 3) lies in ``solid``: sum_i s_i prod_k 1[p in atom_ik] > 1/2, (n,) bool."""
    points = np.asarray(points, float)
    term_in = np.all((points[None] >= solid.box_lo[:, None]) & (points[None] <= solid.box_hi[:, None]), axis=2)
    terms, idx = np.nonzero(term_in)  # only (term, point) pairs inside the term's bounding box
    for k in range(solid.mat.shape[1]):
        t = terms[solid.natoms[terms] > k]  # unused atom slots hold everything
        i = idx[solid.natoms[terms] > k]
        rel = points[i] - solid.center[t, k]
        m = solid.mat[t, k]  # (m, 3, 3)
        q = [m[:, r, 0] * rel[:, 0] + m[:, r, 1] * rel[:, 1] + m[:, r, 2] * rel[:, 2] for r in range(3)]
        ok = (q[0] ** 2 + q[1] ** 2 + solid.w[t, k] * q[2] ** 2 <= 1.0) & (q[2] >= solid.z_lo[t, k]) & (
            q[2] <= solid.z_hi[t, k])
        term_in[t[~ok], i[~ok]] = False
    return solid.sign @ term_in > 0.5


# === Projection ===


def project_masks(solids, geometry, image_size):
    """{name: (size, size) bool}: pixels whose source ray crosses the solid (chord > ``MIN_CHORD``), with
    the renderer's ``scene.line_integrals`` on its pixel grid (``radiograph``: pixel = fov / size)."""
    shape, pixel = (image_size, image_size), geometry["fov"] / image_size
    out = {}
    for name, solid in solids.items():
        if not len(solid):
            out[name] = np.zeros(shape, bool)
            continue
        scene = scene_lib.build_scene([(solid, "bone", "air")])
        chord = scene_lib.line_integrals([scene], _UNIT, geometry["source"], geometry["origin"], geometry["u"],
                                         geometry["v"], shape, pixel)
        out[name] = chord > MIN_CHORD
    return out


def project_points(points, geometry, image_size):
    """Pixel coordinates (n, 2) = (x: column, y: row) of 3-D points (n, 3) on the detector of ``geometry``.

    The ray from the source through p meets the detector plane at h (relative to its centre); pixel
    (row i, column j) has its centre at h = (j + 1/2 - size/2) px u + (i + 1/2 - size/2) px v, as in
    ``scene.line_integrals``, so x = h.u / px + size/2 - 1/2 and y = h.v / px + size/2 - 1/2.
    """
    source, origin, u, v = (np.asarray(geometry[key], float) for key in ("source", "origin", "u", "v"))
    pixel = geometry["fov"] / image_size
    normal = np.cross(u, v)
    rel = np.atleast_2d(np.asarray(points, float)) - source
    hit = ((origin - source) @ normal) / (rel @ normal)[:, None] * rel - (origin - source)
    return np.stack([hit @ u, hit @ v], 1) / pixel + image_size / 2 - 0.5
