"""Dense ground truth of the chest phantom (kmedssl.data.phantom.ground_truth): masks and landmarks of every
rendered view, checked against the images, hand-computed projections, a ray-marching oracle and the 3-D model."""

import dataclasses

import numpy as np
import pytest

from kmedssl.data import phantom
from kmedssl.data.phantom import chest
from kmedssl.data.phantom import geometry as geo
from kmedssl.data.phantom import ground_truth as gt_lib
from kmedssl.data.phantom.imaging import projection_geometry, radiograph

pytestmark = pytest.mark.backend_free

SIZE = 48
FRONTAL, LATERAL = ("PA", "AP"), ("LATERAL", "LL")


@pytest.fixture(scope="module")
def cohort():
    return phantom.ChestCohort(num_subjects=8, seed=2)  # 29 views; every finding in 5 or more of them


@pytest.fixture(scope="module")
def views(cohort):
    """(record, image, ground truth) of every record at SIZE px."""
    return [(r, cohort.render(r, SIZE), cohort.ground_truth(r, SIZE)) for r in cohort.records]


def _study(cohort, record):
    i, k, _ = cohort._locate(record)
    return cohort._anatomy(i), cohort._findings(i)[k]


def _geometry(view, sid=2000.0, fov=44.0):
    """A jitter-free geometry (no rotation, isocentre exactly at the origin's height): PA or LATERAL."""
    rng = np.random.default_rng(0)
    if view == "PA":
        return projection_geometry([0, 1, 0], [0.0, 0.0, -1.5], 12.0, sid, [1, 0, 0], [0, 0, -1], fov, rng, 0.0)
    return projection_geometry([1, 0, 0], [0.0, 0.0, -1.5], 16.0, sid, [0, -1, 0], [0, 0, -1], fov, rng, 0.0)


def _centroid(mask):
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean(), rows.mean()])  # (x, y)


# === Form and determinism ===


def test_masks_and_landmarks_have_the_documented_form(views):
    for record, image, truth in views:
        assert tuple(truth.masks) == gt_lib.STRUCTURES and tuple(truth.landmarks) == gt_lib.LANDMARKS
        for mask in truth.masks.values():
            assert mask.shape == image.shape == (SIZE, SIZE) and mask.dtype == bool
        for landmark in truth.landmarks.values():
            assert np.isfinite([landmark.x, landmark.y, *landmark.point]).all()
            inside = -0.5 <= landmark.x < SIZE - 0.5 and -0.5 <= landmark.y < SIZE - 0.5
            assert landmark.visible == inside
        assert truth.masks["lung_right"].any() and truth.masks["lung_left"].any() and truth.masks["heart"].any()
        assert truth.landmarks["carina"].visible and truth.landmarks["heart_border_left"].visible


def test_landmarks_outside_the_image_are_not_visible(cohort):
    anatomy, findings = _study(cohort, cohort.records[0])
    narrow = gt_lib.view_ground_truth(anatomy, findings, _geometry("PA", fov=20.0), SIZE)  # +-10 cm about z = -1.5
    visible = {name for name, landmark in narrow.landmarks.items() if landmark.visible}
    assert "carina" in visible and "lung_apex_right" not in visible and "clavicle_head_left" not in visible


def test_same_seed_gives_the_same_ground_truth(cohort, views):
    again = phantom.ChestCohort(num_subjects=8, seed=2)
    for record, _, truth in views[::4]:
        other = again.ground_truth(record, SIZE)
        assert other.landmarks == truth.landmarks
        for name in gt_lib.STRUCTURES:
            np.testing.assert_array_equal(other.masks[name], truth.masks[name])


def test_rejects_bad_arguments(cohort):
    with pytest.raises(ValueError, match="image_size"):
        cohort.ground_truth(cohort.records[0], image_size=4)
    foreign = phantom.ChestCohort(num_subjects=30, seed=3).records[-1]
    with pytest.raises(ValueError, match="record of this cohort"):
        cohort.ground_truth(foreign, SIZE)


# === The rendered image ===


def test_ground_truth_geometry_renders_the_image(cohort):
    """The geometry the ground truth projects with is the image's: re-rendering with it gives the same pixels."""
    for record in cohort.records[:3]:
        i, k, v = cohort._locate(record)
        rng = phantom._rng(cohort.seed, phantom._IMAGE, i, k, v)
        geometry = chest.chest_projection(cohort._anatomy(i), record.view, rng)
        pose = "arms_up" if record.view in LATERAL else record.view.lower()
        image = radiograph(cohort._scenes(i, k, pose), geometry, SIZE, rng)
        np.testing.assert_array_equal(image, cohort.render(record, SIZE))


def test_lungs_are_darker_than_the_heart(views):
    """Air attenuates least: the windowed log image is dark in the lungs and bright over the heart."""
    gaps = {"frontal": [], "lateral": []}
    for record, image, truth in views:
        lungs = (truth.masks["lung_right"] | truth.masks["lung_left"]) & ~truth.masks["heart"]
        gap = image[truth.masks["heart"]].mean() - image[lungs].mean()
        gaps["frontal" if record.view in FRONTAL else "lateral"].append(gap)
    assert min(gaps["frontal"]) > 0.15  # every frontal view
    assert np.mean(gaps["lateral"]) > 0.02  # laterals superimpose both lungs on the heart: on average


def test_a_finding_mask_is_non_empty_iff_the_study_has_the_finding(cohort, views):
    """Absent: always empty. Present: non-empty, unless its projection is under about 2 pixels (a small
    nodule between pixel centres, a sliver of fluid or atelectasis left by the diaphragm's cut)."""
    seen = set()
    for record, _, truth in views:
        present = {name for name, value in zip(phantom.CHEST_LABELS, record.labels) if value}
        assert truth.masks["pneumothorax_visible"].any() <= truth.masks["pneumothorax"].any()
        for name in gt_lib.FINDING_STRUCTURES:
            if name not in present:
                assert not truth.masks[name].any(), (record.image_id, name)
            elif truth.masks[name].any():
                seen.add(name)
            else:
                assert cohort.ground_truth(record, 4 * SIZE).masks[name].sum() <= 32
    assert seen == set(gt_lib.FINDING_STRUCTURES)


# === Projection: hand-computed cases and an oracle ===


def test_sphere_projects_to_a_disc_of_the_cone_beam_radius():
    """A sphere of radius R at distance d from the source, on the beam's axis, casts a disc of radius
    SID * R / sqrt(d^2 - R^2) on the detector (the tangent cone's half-angle is asin(R / d))."""
    geometry = {"source": np.array([0.0, -100.0, 0.0]), "origin": np.array([0.0, 50.0, 0.0]),
                "u": np.array([1.0, 0.0, 0.0]), "v": np.array([0.0, 0.0, -1.0]), "fov": 32.0}
    size, pixel = 64, 0.5
    mask = gt_lib.project_masks({"s": geo.ellipsoid([0.0, 0.0, 0.0], [5.0] * 3)}, geometry, size)["s"]
    radius = 150.0 * 5.0 / np.sqrt(100.0**2 - 5.0**2)  # 7.509 cm = 15.02 px
    centres = (np.arange(size) + 0.5 - size / 2) * pixel
    distance = np.hypot(centres[None, :], centres[:, None])
    np.testing.assert_array_equal(mask, distance < radius)
    assert abs(mask.sum() - np.pi * (radius / pixel) ** 2) < 2 * np.pi * radius / pixel  # area, up to the rim
    np.testing.assert_allclose(gt_lib.project_points([[0.0, 0.0, 0.0]], geometry, size), [[31.5, 31.5]])


def test_points_project_onto_the_pixels_their_rays_hit():
    """x is the column and y the row of the mask array: a small off-axis sphere's mask is centred on
    the projection of its centre, and the image's up (+z) and patient's left (+x, PA) go where expected."""
    geometry = _geometry("PA", sid=180.0)
    center = np.array([6.0, 2.0, 5.0])  # patient's left, anterior, superior
    mask = gt_lib.project_masks({"s": geo.ellipsoid(center, [3.0] * 3)}, geometry, 96)["s"]  # radius 6.6 px
    (x, y), = gt_lib.project_points([center], geometry, 96)
    np.testing.assert_allclose(_centroid(mask), [x, y], atol=0.2)
    assert x > 47.5 and y < 47.5  # right half (patient's left in PA), upper half


def _ray_march(solid, geometry, size, step=0.02):
    """Oracle: the pixels whose ray (source -> pixel centre) has a point inside ``solid``, sampled every ``step`` cm
    over the part of the ray inside the solid's bounding box."""
    pixel = geometry["fov"] / size
    offsets = (np.arange(size) + 0.5 - size / 2) * pixel
    centres = (geometry["origin"] + offsets[None, :, None] * geometry["u"]
               + offsets[:, None, None] * geometry["v"]).reshape(-1, 3)
    source = geometry["source"]
    rays = centres - source
    lo, hi = solid.box_lo[solid.sign > 0].min(0), solid.box_hi[solid.sign > 0].max(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (lo - source) / rays, (hi - source) / rays
    enter = np.nanmax(np.minimum(t0, t1), axis=1).clip(0.0, 1.0)
    leave = np.nanmin(np.maximum(t0, t1), axis=1).clip(0.0, 1.0)
    hit = np.zeros(len(rays), bool)
    for n in np.flatnonzero(leave > enter):
        length = (leave[n] - enter[n]) * np.linalg.norm(rays[n])
        t = np.linspace(enter[n], leave[n], int(length / step) + 2)
        hit[n] = gt_lib.inside(solid, source + t[:, None] * rays[n]).any()
    return hit.reshape(size, size)


def test_masks_match_a_ray_marching_oracle(cohort):
    """Masks from the renderer's chords equal a brute-force march along every pixel's ray (up to rays whose
    chord is shorter than the march's step, at most a couple of rim pixels)."""
    record = next(r for r in cohort.records if r.view in FRONTAL and r.labels[1] and r.labels[2])  # effusion, nodule
    anatomy, findings = _study(cohort, record)
    solids = gt_lib.chest_structures(anatomy, findings)
    geometry = _geometry("PA", sid=180.0)
    for name in ("lung_right", "heart", "clavicle_left", "effusion", "nodule"):
        mask = gt_lib.project_masks({name: solids[name]}, geometry, 24)[name]
        oracle = _ray_march(solids[name], geometry, 24)
        assert (mask != oracle).sum() <= 2, name
        assert mask.any() or name == "nodule", name  # a small nodule may fall between the 1.8 cm pixels


# === Geometric consistency ===


def test_a_mask_centroid_moves_with_its_structure(cohort):
    """Moving a nodule moves its mask by the projection of the move: +x (patient's left) to the right
    of a PA image, +y (anterior) to the left of a lateral one, +z up in both."""
    anatomy, _ = _study(cohort, cohort.records[0])
    center = chest._lung_ellipsoid(anatomy, -1, 1.0)[0] + [0.0, 0.0, 6.0]  # upper right lung, clear of the heart

    def nodule_centroid(shift, view):
        findings = chest.ChestFindings(nodules=((center + shift, 1.5, False),))
        truth = gt_lib.view_ground_truth(anatomy, findings, _geometry(view, sid=180.0), 96)
        return _centroid(truth.masks["nodule"]), gt_lib.project_points([center + shift], _geometry(view, sid=180.0), 96)

    for view, shift, sign in [("PA", [2.0, 0.0, 0.0], [1, 0]), ("PA", [0.0, 0.0, 2.0], [0, -1]),
                              ("LATERAL", [0.0, 2.0, 0.0], [-1, 0]), ("LATERAL", [0.0, 0.0, 2.0], [0, -1])]:
        before, p0 = nodule_centroid(np.zeros(3), view)
        after, p1 = nodule_centroid(np.array(shift), view)
        moved = after - before
        np.testing.assert_allclose(moved, (p1 - p0)[0], atol=0.3)
        assert np.all(np.where(np.abs(moved) < 0.5, 0, np.sign(moved)) == sign), (view, shift, moved)


def test_cardiomegaly_enlarges_the_heart_mask_to_the_patients_left(cohort):
    anatomy, _ = _study(cohort, cohort.records[0])
    normal, enlarged = chest.ChestFindings(), chest.ChestFindings(cardiomegaly=1.4)
    geometry = _geometry("PA", sid=180.0)
    a = gt_lib.view_ground_truth(anatomy, normal, geometry, 64)
    b = gt_lib.view_ground_truth(anatomy, enlarged, geometry, 64)
    assert b.masks["heart"].sum() > 1.2 * a.masks["heart"].sum()
    assert _centroid(b.masks["heart"])[0] > _centroid(a.masks["heart"])[0] + 1.0
    assert b.landmarks["heart_border_left"].x > a.landmarks["heart_border_left"].x + 2.0
    assert b.landmarks["carina"] == a.landmarks["carina"]  # cardiomegaly moves no airway


def test_frontal_and_lateral_views_agree_in_height(cohort, views):
    """Both projections share the vertical axis (v = -z) and the isocentre's height: with the jitter off
    and a distant source every landmark, and every mask's top and bottom row, is at the same row."""
    for record in cohort.records[:6]:
        anatomy, findings = _study(cohort, record)
        pa = gt_lib.view_ground_truth(anatomy, findings, _geometry("PA"), SIZE)
        lat = gt_lib.view_ground_truth(anatomy, findings, _geometry("LATERAL"), SIZE)
        for name in gt_lib.LANDMARKS:
            assert abs(pa.landmarks[name].y - lat.landmarks[name].y) < 0.5, name
        for name in ("lung_right", "lung_left", "heart", "airways"):
            rows_pa, rows_lat = np.flatnonzero(pa.masks[name].any(1)), np.flatnonzero(lat.masks[name].any(1))
            assert abs(rows_pa[0] - rows_lat[0]) <= 1 and abs(rows_pa[-1] - rows_lat[-1]) <= 1, name
    # In the cohort's own views (jitter, magnification and field of view differ per image) the vertical
    # order of landmarks more than 3 cm apart in height is the same in a study's frontal and lateral views.
    by_study = {}
    for record, _, truth in views:
        by_study.setdefault(record.study_id, {})["F" if record.view in FRONTAL else "L"] = truth
    pairs = [(v["F"], v["L"]) for v in by_study.values() if len(v) == 2]
    assert len(pairs) >= 5
    for frontal, lateral in pairs:
        for a in gt_lib.LANDMARKS:
            for b in gt_lib.LANDMARKS:
                if frontal.landmarks[a].point[2] > frontal.landmarks[b].point[2] + 3.0:
                    assert frontal.landmarks[a].y < frontal.landmarks[b].y
                    assert lateral.landmarks[a].y < lateral.landmarks[b].y


def test_landmarks_lie_on_the_structures_they_name(cohort, views):
    """2-D: a visible landmark's pixel touches its structure's mask (3 x 3 neighbourhood). 3-D: the point is
    on the structure's boundary (within 0.01 cm of points inside and outside it; the carina: inside the
    airways) and is the extreme point its definition names (no point of the structure beyond it)."""
    for record, _, truth in views:
        for name, landmark in truth.landmarks.items():
            if landmark.visible:
                x, y = int(round(landmark.x)), int(round(landmark.y))
                assert truth.masks[gt_lib.LANDMARK_STRUCTURES[name]][max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].any(), (
                    record.image_id, name)
    rng = np.random.default_rng(0)
    offsets = 0.01 * np.vstack([np.zeros(3), np.eye(3), -np.eye(3)]) @ geo.rotation(0.3, 0.2, 0.1).T
    extremes = {"lung_apex_right": ("lung_right", 2, 1), "lung_apex_left": ("lung_left", 2, 1),
                "heart_border_right": ("heart", 0, -1), "heart_border_left": ("heart", 0, 1)}
    for record in cohort.records[::5]:
        anatomy, findings = _study(cohort, record)
        solids = gt_lib.chest_structures(anatomy, findings)
        points = gt_lib.chest_landmark_points(anatomy, findings, solids)
        for name, point in points.items():
            near = gt_lib.inside(solids[gt_lib.LANDMARK_STRUCTURES[name]], point + offsets)
            assert near.any() and (name == "carina" or not near.all()), (record.image_id, name)
        for name, (structure, axis, sign) in extremes.items():
            solid = solids[structure]
            box_lo, box_hi = solid.box_lo[solid.sign > 0].min(0), solid.box_hi[solid.sign > 0].max(0)
            cloud = rng.uniform(box_lo, box_hi, (20000, 3))
            inner = cloud[gt_lib.inside(solid, cloud)]
            assert len(inner) > 1000 and (sign * inner[:, axis]).max() <= sign * points[name][axis] + 1e-6, name
        for side in ("right", "left"):  # the costophrenic angle is the lowest lateral lung point in its plane
            lung, cp = solids[f"lung_{side}"], points[f"costophrenic_angle_{side}"]
            grid = np.stack(np.meshgrid(np.linspace(-16, 16, 161), [cp[1]], np.linspace(-25, 5, 151)), -1)
            grid = grid.reshape(-1, 3)
            lateral = grid[gt_lib.inside(lung, grid) & (np.abs(grid[:, 0]) >= abs(cp[0]))]
            assert lateral[:, 2].min() >= cp[2] - 0.2


# === The refactor that named the layers kept every pixel ===

# Sum and position-weighted sum of the 64-px images, recorded before chest.chest_study_parts and
# chest_bones.clavicle were split out of the layer builders (the benchmark's numbers depend on these pixels).
_BEFORE = {
    (0, "50000000-0"): (1797.136804, 176912.8806),  # PA
    (0, "50000000-1"): (1558.974017, 164109.9697),  # LL
    (1, "50000000-0"): (1659.025904, 169944.4215),  # AP
    (1, "50000001-1"): (1406.046409, 138260.2784),  # LATERAL
    (2, "50000000-0"): (1515.620720, 150704.1070),  # PA
    (2, "50000000-2"): (1564.443065, 149300.3150),  # LATERAL
}


def test_rendered_pixels_are_unchanged():
    cohorts = {seed: phantom.ChestCohort(num_subjects=8, seed=seed) for seed in (0, 1, 2)}
    for (seed, image_id), expected in _BEFORE.items():
        record = next(r for r in cohorts[seed].records if r.image_id == image_id)
        image = cohorts[seed].render(record, 64).astype(np.float64)
        rows, cols = np.indices(image.shape)
        np.testing.assert_allclose([image.sum(), (image * (rows + 2 * cols)).sum()], expected, rtol=1e-6)


def test_structures_are_the_rendered_layers(cohort):
    """The masks' solids are the renderer's own layers (``chest_study_parts``), not copies of their geometry."""
    anatomy, findings = _study(cohort, cohort.records[0])
    parts = dict(chest.chest_study_parts(anatomy, findings))
    solids = gt_lib.chest_structures(anatomy, findings)
    for name in ("lung_right", "lung_left", "airways"):
        for field in dataclasses.fields(geo.Solid):
            np.testing.assert_array_equal(getattr(solids[name], field.name), getattr(parts[name][0], field.name))
