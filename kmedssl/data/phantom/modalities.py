"""Multi-modality phantom cases: which modality x anatomy pairs exist, and how each is imaged.

A case is one image of one subject: radiographs (XR) of chest, abdomen and knee; CT and MR slices of
chest, abdomen, knee and brain; ultrasound (US) of the abdomen. Slices sample the same analytic phantoms
as the radiographs on a plane, with modality-specific contrast (``tissues``).
"""

import dataclasses

import numpy as np

from kmedssl.data.phantom import chest
from kmedssl.data.phantom import imaging as imaging
from kmedssl.data.phantom import scene as scene_lib
from kmedssl.data.phantom.abdomen import abdomen_layers
from kmedssl.data.phantom.head import head_layers
from kmedssl.data.phantom.knee import knee_layers

MODALITIES = ("XR", "CT", "MR", "US")
ANATOMIES = ("chest", "abdomen", "knee", "brain")
_VIEWS = {
    ("XR", "chest"): ("PA", "AP", "LATERAL"),
    ("XR", "abdomen"): ("AP",),
    ("XR", "knee"): ("AP", "LATERAL"),
    ("CT", "chest"): ("AXIAL", "CORONAL"),
    ("CT", "abdomen"): ("AXIAL", "CORONAL"),
    ("CT", "knee"): ("AXIAL", "CORONAL", "SAGITTAL"),
    ("CT", "brain"): ("AXIAL",),
    ("MR", "chest"): ("AXIAL", "CORONAL"),
    ("MR", "abdomen"): ("AXIAL", "CORONAL"),
    ("MR", "knee"): ("SAGITTAL", "CORONAL", "AXIAL"),
    ("MR", "brain"): ("AXIAL", "SAGITTAL", "CORONAL"),
    ("US", "abdomen"): ("AXIAL", "SAGITTAL"),
}
COMBINATIONS = tuple(_VIEWS)
# Slice centre and half-range along the slice normal per anatomy and orientation (cm, before scaling).
_CENTER = {"chest": (0.0, 0.0, -3.0), "abdomen": (0.0, 0.0, -2.0), "knee": (0.0, 0.0, 0.8),
           "brain": (0.0, 0.5, 0.5)}
_RANGE = {"chest": {"AXIAL": 10.0, "CORONAL": 4.0, "SAGITTAL": 7.0},
          "abdomen": {"AXIAL": 14.0, "CORONAL": 4.0, "SAGITTAL": 7.0},
          "knee": {"AXIAL": 4.0, "CORONAL": 1.5, "SAGITTAL": 2.5},
          "brain": {"AXIAL": 3.5, "CORONAL": 3.5, "SAGITTAL": 2.0}}
_CT_WINDOWS = {"chest": ((-600.0, 1500.0), (40.0, 400.0)), "abdomen": ((50.0, 400.0), (40.0, 350.0)),
               "knee": ((400.0, 1800.0), (50.0, 400.0)), "brain": ((40.0, 80.0), (35.0, 100.0))}
_BUILDERS = {"abdomen": abdomen_layers, "knee": knee_layers, "brain": head_layers}


@dataclasses.dataclass(frozen=True)
class Case:
    """One multi-modality image: what it shows, who it belongs to, and the seed of its phantom."""

    modality: str
    anatomy: str
    view: str
    sex: str
    age: float
    abnormal: bool
    key: int


def sample_case(rng):
    """Draw a case: a modality x anatomy pair (uniform over ``COMBINATIONS``), a view, sex, age, a lesion."""
    modality, anatomy = COMBINATIONS[int(rng.integers(len(COMBINATIONS)))]
    views = _VIEWS[(modality, anatomy)]
    return Case(modality=modality, anatomy=anatomy, view=views[int(rng.integers(len(views)))],
                sex="F" if rng.random() < 0.5 else "M",
                age=float(np.clip(np.round(rng.normal(55.0, 18.0)), 18.0, 95.0)),
                abnormal=bool(rng.random() < 0.3), key=int(rng.integers(2**62)))


def build_case(case):
    """Compiled scenes and size info of a case's phantom (deterministic from ``case.key``)."""
    rng = np.random.default_rng(case.key)
    if case.anatomy == "chest":
        anatomy = chest.sample_anatomy(rng, case.sex, case.age)
        present = {str(rng.choice(["nodule", "consolidation", "effusion"]))} if case.abnormal else set()
        findings = chest.sample_findings(rng, anatomy, present)
        # Radiographs keep the view's pose; CT and MR are supine with the arms raised.
        pose = {"PA": "pa", "AP": "ap"}.get(case.view, "arms_up")
        scenes = [scene_lib.build_scene(chest.chest_static_layers(anatomy, pose)),
                  scene_lib.build_scene(chest.chest_study_layers(anatomy, findings))]
        rx, ry = chest.body_half_size(anatomy)
        return scenes, {"scale": anatomy.s, "half_width": rx, "half_depth": ry, "anatomy": anatomy}
    layers, info = _BUILDERS[case.anatomy](rng, case.sex, case.age, case.abnormal)
    return [scene_lib.build_scene(layers)], info


def render_multimodal(case, size, rng, cached):
    """Render a case at ``size`` px; ``cached(build)`` returns the case's (scenes, info), building it once."""
    scenes, info = cached(lambda: build_case(case))
    if case.modality == "XR":
        if case.anatomy == "chest":
            return imaging.radiograph(scenes, _projection(case, info, rng), size, rng)
        if case.anatomy == "abdomen":
            return imaging.radiograph(scenes, _projection(case, info, rng), size, rng, compression=(0.0, 0.3),
                                      window=(8.0, 99.7), gamma=(1.0, 1.4))
        return imaging.radiograph(scenes, _projection(case, info, rng), size, rng, compression=(0.0, 0.3),
                                  gamma=(0.9, 1.3))
    if case.modality == "US":
        return imaging.us_image(scenes, _probe(case, info, rng), size, rng)
    plane = _plane(case, info, rng)
    if case.modality == "CT":
        windows = _CT_WINDOWS[case.anatomy]
        noise = (1.5, 4.0) if case.anatomy == "brain" else (4.0, 12.0)
        return imaging.ct_image(scenes, plane, size, rng, windows[int(rng.integers(len(windows)))], noise)
    return imaging.mr_image(scenes, plane, size, rng, "t1" if rng.random() < 0.5 else "t2")


def _projection(case, info, rng):
    s = info["scale"]
    if case.anatomy == "chest":
        return chest.chest_projection(info["anatomy"], case.view, rng)
    if case.anatomy == "abdomen":
        return imaging.projection_geometry([0, -1, 0], [0.0, 0.0, -8.0 * s], info["half_depth"] + 2.0,
                                           rng.uniform(100, 115), [1, 0, 0], [0, 0, -1],
                                           2.0 * info["half_width"] * rng.uniform(1.15, 1.3), rng)
    beam, u = ([0, -1, 0], [1, 0, 0]) if case.view == "AP" else ([1, 0, 0], [0, 1, 0])
    return imaging.projection_geometry(beam, [0.0, 0.0, 1.0 * s], info["half_width"] + 2.0, rng.uniform(100, 115),
                                       u, [0, 0, -1], rng.uniform(22.0, 28.0) * s, rng, jitter=0.4)


def _plane(case, info, rng):
    """A slice plane: orientation from the view, position drawn within the anatomy, slight in-plane tilt."""
    s = info["scale"]
    u, v = (np.asarray(a) for a in imaging.AXES[case.view])
    normal = np.cross(u, v)
    center = np.asarray(_CENTER[case.anatomy]) * s
    origin = center + normal * rng.uniform(-1.0, 1.0) * _RANGE[case.anatomy][case.view] * s
    angle = rng.normal(0.0, 0.06)
    u, v = np.cos(angle) * u + np.sin(angle) * v, -np.sin(angle) * u + np.cos(angle) * v
    if case.anatomy == "knee":
        fov = rng.uniform(14.0, 18.0) * s
    else:
        fov = 2.0 * max(info["half_width"], info["half_depth"]) * rng.uniform(1.05, 1.2)
    origin = origin + (u * rng.normal(0.0, 0.02) + v * rng.normal(0.0, 0.02)) * fov
    return {"origin": origin, "u": u, "v": v, "fov": fov}


def _probe(case, info, rng):
    """A convex abdominal probe on the anterior skin below the costal margin (right upper quadrant or
    epigastrium), tilted towards the head to look under the ribs at the liver, gallbladder and kidney."""
    s = info["scale"]
    radius = 4.0 * s
    rx, ry = info["half_width"], info["half_depth"]
    x = rng.uniform(-9.0, 1.0) * s
    z = rng.uniform(0.0, 6.0) * s
    y = ry * np.sqrt(1.0 - (x / rx) ** 2)
    inward = -np.array([x / rx**2, y / ry**2, 0.0])
    down = inward / np.linalg.norm(inward) + np.array([0.0, 0.0, rng.uniform(0.2, 0.6)])
    down /= np.linalg.norm(down)
    skin = np.array([x, y, z]) + 0.3 * s * down
    if case.view == "AXIAL":
        lateral = np.cross([0.0, 0.0, 1.0], down)
    else:
        lateral = -(np.array([0.0, 0.0, 1.0]) - down[2] * down)
    lateral /= np.linalg.norm(lateral)
    return {"apex": skin - down * radius, "down": down, "lateral": lateral, "radius": radius,
            "depth": rng.uniform(14.0, 18.0) * s, "half_angle": rng.uniform(0.5, 0.65)}
