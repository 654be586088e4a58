"""The embedded phantom data set (SPEC §4 "Phantom"): records, determinism, physics and pathologies."""

import collections
import dataclasses
import pickle
import subprocess
import sys

import numpy as np
import pytest

from kmedssl.data import phantom
from kmedssl.data.phantom import chest as chest
from kmedssl.data.phantom import geometry as geo
from kmedssl.data.phantom import scene as scene_lib
from kmedssl.data.phantom import tissues as tissues
from kmedssl.data.records import FRONTAL_VIEWS, LATERAL_VIEWS

pytestmark = pytest.mark.backend_free

MU = tissues.column("xr")


@pytest.fixture(scope="module")
def cohort():
    return phantom.ChestCohort(num_subjects=120, seed=3)


@pytest.fixture(scope="module")
def multimodal():
    return phantom.MultiModalCohort(num_images=150, seed=5)


def _studies(records):
    out = collections.defaultdict(list)
    for r in records:
        out[r.study_id].append(r)
    return out


def _parallel(scenes, beam, u, size=64, fov=48.0):
    """Noise-free line integrals (mu, cm) with a source 100 m away (effectively a parallel beam)."""
    beam = np.asarray(beam, float)
    return scene_lib.line_integrals(scenes, MU, -1e4 * beam, 30.0 * beam, u, [0, 0, -1], (size, size), fov / size)


# === Geometry: exact line integrals ===


def test_chords_of_primitives_are_analytic():
    """Cone-beam chords through a rotated ellipsoid against the float64 quadratic, source 10 m away."""
    rot = geo.rotation(0.3, -0.4, 0.7)
    center, radii = np.array([1.0, 0.5, -0.5]), np.array([5.0, 3.0, 4.0])
    scene = [scene_lib.build_scene([(geo.ellipsoid(center, radii, rot), "bone", "air")])]
    source, detector = np.array([0.0, -1000.0, 0.0]), np.array([0.0, 50.0, 0.0])
    line = scene_lib.line_integrals(scene, MU, source, detector, [1, 0, 0], [0, 0, -1], (9, 9), 1.0)
    inv = np.diag(1 / radii) @ rot.T
    for i, j in [(4, 4), (2, 5), (6, 1), (0, 0)]:
        d = detector + [j - 4.0, 0.0, -(i - 4.0)] - source
        e, q = inv @ (d / np.linalg.norm(d)), inv @ (source - center)
        a, b, c = e @ e, q @ e, q @ q - 1.0
        chord = 2 * np.sqrt(max(b * b - a * c, 0.0)) / a
        assert line[i, j] == pytest.approx(chord * MU[tissues.TISSUES.index("bone")], rel=2e-5, abs=1e-5)


def test_difference_and_cylinder_chords():
    sphere = geo.ellipsoid([0, 0, 0], [5, 5, 5])
    bar = geo.cylinder([0, -3, 0], [0, 3, 0], 2.0)  # along the beam: chord 6 wherever x^2 + z^2 < 4
    scene = [scene_lib.build_scene([(sphere - bar, "muscle", "air"), (bar, "air", "air")])]
    line = scene_lib.line_integrals(scene, MU, [0, -1e4, 0], [0, 0, 0], [1, 0, 0], [0, 0, -1], (11, 11), 1.0)
    mu = MU[tissues.TISSUES.index("muscle")]
    assert line[5, 5] == pytest.approx((10.0 - 6.0) * mu, rel=1e-4)  # sphere chord 10 minus the hole
    assert line[5, 9] == pytest.approx(2 * np.sqrt(25 - 16) * mu, rel=1e-4)  # x = 4: outside the bar
    assert line[5, 0] == 0.0


def test_plane_sampling_matches_membership():
    scene = [scene_lib.build_scene([(geo.ellipsoid([0, 0, 0], [4, 4, 4]), "muscle", "air"),
                                    (geo.ellipsoid([0, 0, 0], [2, 2, 2]), "bone", "muscle")])]
    ct = tissues.column("ct")[:, None]
    img = scene_lib.sample_plane(scene, ct, [0, 0, 0], [1, 0, 0], [0, -1, 0], (21, 21), 0.5)[..., 0]
    index = {name: i for i, name in enumerate(tissues.TISSUES)}
    assert img[10, 10] == pytest.approx(ct[index["bone"], 0])
    assert img[10, 16] == pytest.approx(ct[index["muscle"], 0])  # x = 3
    assert img[10, 0] == pytest.approx(ct[index["air"], 0])  # x = -5
    assert img[10, 2] == pytest.approx(0.5 * (ct[index["air"], 0] + ct[index["muscle"], 0]))  # x = -4: the edge


def test_frontal_and_lateral_project_the_same_volume():
    """With a parallel beam, the detector integral of ∫mu dl is ∫mu dV whatever the direction."""
    rng = np.random.default_rng(0)
    a = chest.sample_anatomy(rng, "F", 70)
    f = chest.sample_findings(rng, a, {"effusion", "nodule"})
    scenes = [scene_lib.build_scene(chest.chest_static_layers(a, "ap")),
              scene_lib.build_scene(chest.chest_study_layers(a, f))]
    fov, size = 120.0, 96
    frontal = _parallel(scenes, [0, 1, 0], [1, 0, 0], size, fov).sum() * (fov / size) ** 2
    lateral = _parallel(scenes, [1, 0, 0], [0, -1, 0], size, fov).sum() * (fov / size) ** 2
    assert frontal == pytest.approx(lateral, rel=0.01)


# === Records ===


def test_chest_records(cohort):
    assert cohort.label_names == phantom.CHEST_LABELS and len(phantom.CHEST_LABELS) >= 6
    ids = [r.image_id for r in cohort.records]
    assert len(ids) == len(set(ids))
    for r in cohort.records:
        assert (r.modality, r.anatomy) == ("XR", "chest")
        assert r.view in FRONTAL_VIEWS + LATERAL_VIEWS
        assert len(r.labels) == len(phantom.CHEST_LABELS)
        assert all(isinstance(x, float) and x in (0.0, 1.0) for x in r.labels)
        assert r.sex in ("F", "M") and 18.0 <= r.age <= 95.0
    assert {r.sex for r in cohort.records} == {"F", "M"}
    for study in _studies(cohort.records).values():
        assert len({r.labels for r in study}) == 1 and len({r.subject_id for r in study}) == 1


def test_study_structure_has_real_pairing_cases(cohort):
    kinds = collections.Counter()
    for study in _studies(cohort.records).values():
        frontal = sum(r.is_frontal for r in study)
        lateral = sum(r.is_lateral for r in study)
        kinds["pair"] += frontal >= 1 and lateral >= 1
        kinds["single"] += len(study) == 1
        kinds["two_frontals"] += frontal >= 2
    assert kinds["pair"] > kinds["single"] > 0 and kinds["two_frontals"] > 0
    per_subject = collections.Counter(len({r.study_id for r in cohort.records if r.subject_id == s})
                                      for s in {r.subject_id for r in cohort.records})
    assert set(per_subject) == {1, 2, 3}


def test_label_prevalence_in_range():
    studies = _studies(phantom.ChestCohort(num_subjects=500, seed=11).records).values()
    labels = np.array([s[0].labels for s in studies])
    prevalence = labels.mean(axis=0)
    assert np.all((prevalence > 0.08) & (prevalence < 0.4)), prevalence
    assert (labels.sum(axis=1) >= 2).mean() > 0.1  # findings co-occur


def test_anatomy_follows_sex_and_age():
    rng = np.random.default_rng(0)
    men = [chest.sample_anatomy(rng, "M", 40) for _ in range(40)]
    women = [chest.sample_anatomy(rng, "F", 80) for _ in range(40)]
    assert np.mean([a.s for a in men]) > np.mean([a.s for a in women])
    assert np.mean([a.bone for a in men]) > np.mean([a.bone for a in women])
    assert all(a.breast == 0.0 for a in men) and all(a.breast > 0.0 for a in women)


# === Rendering ===


def test_render_shape_range_and_determinism(cohort):
    record = cohort.records[0]
    for size in (32, 48):
        img = cohort.render(record, image_size=size)
        assert img.shape == (size, size) and img.dtype == np.float32
        assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0 and img.std() > 0.05
    other = phantom.ChestCohort(num_subjects=120, seed=3)  # fresh caches, other render order
    later = other.records[5]
    first = other.render(later, 40)
    np.testing.assert_array_equal(other.render(record, 40), cohort.render(record, 40))
    np.testing.assert_array_equal(first, cohort.render(later, 40))
    assert not np.array_equal(cohort.render(record, 40), phantom.ChestCohort(120, seed=4).render(
        phantom.ChestCohort(120, seed=4).records[0], 40))


def test_render_is_identical_in_another_process(cohort):
    code = ("from kmedssl.data import phantom; c = phantom.ChestCohort(num_subjects=120, seed=3); "
            "print(c.render(c.records[7], 24).tobytes().hex())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert bytes.fromhex(out) == cohort.render(cohort.records[7], 24).tobytes()


def test_cohort_pickles_without_its_caches(cohort):
    cohort.render(cohort.records[2], 24)
    clone = pickle.loads(pickle.dumps(cohort))
    assert "_caches" not in clone.__dict__
    np.testing.assert_array_equal(clone.render(cohort.records[2], 24), cohort.render(cohort.records[2], 24))


def test_views_of_a_study_differ_but_share_anatomy(cohort):
    study = next(s for s in _studies(cohort.records).values()
                 if any(r.view == "PA" for r in s) and any(r.is_lateral for r in s))
    frontal = next(r for r in study if r.view == "PA")
    lateral = next(r for r in study if r.is_lateral)
    assert cohort.findings(frontal) is cohort.findings(lateral)
    a, b = cohort.render(frontal, 48), cohort.render(lateral, 48)
    assert np.abs(a - b).mean() > 0.05
    # Both views see the same diaphragm: the lungs (dark) end at the same height within a few pixels.
    def lung_base(img):
        rows = img[:, 12:36].mean(axis=1)
        return int(np.argmax(np.diff(rows[20:]))) + 20

    assert abs(lung_base(a) - lung_base(b)) <= 6


def test_render_rejects_bad_input(cohort):
    with pytest.raises(ValueError, match="image_size"):
        cohort.render(cohort.records[0], image_size=4)
    with pytest.raises(ValueError, match="record of this cohort"):
        cohort.render(dataclasses.replace(cohort.records[0], image_id="nope"))
    with pytest.raises(ValueError, match="num_subjects"):
        phantom.ChestCohort(num_subjects=0)
    with pytest.raises(ValueError, match="seed"):
        phantom.MultiModalCohort(num_images=3, seed=-1)


# === Pathologies ===


def _frontal_line(a, f, size=64):
    scenes = [scene_lib.build_scene(chest.chest_static_layers(a, "pa")),
              scene_lib.build_scene(chest.chest_study_layers(a, f))]
    return _parallel(scenes, [0, 1, 0], [1, 0, 0], size)


def test_cardiomegaly_widens_the_heart_shadow():
    a = chest.sample_anatomy(np.random.default_rng(1), "M", 60)
    normal = chest.sample_findings(np.random.default_rng(2), a, set())
    widths = []
    for factor in (1.0, 1.4):
        line = _frontal_line(a, dataclasses.replace(normal, cardiomegaly=factor))
        band = line[34:44]  # rows through the heart (below the hila, above the domes)
        lung = np.percentile(band, 10)
        widths.append(np.mean((band > lung + 1.0).sum(axis=1)))
    assert widths[1] > widths[0] + 2  # columns of 0.75 cm


@pytest.mark.parametrize("label", chest.CHEST_LABELS)
def test_each_pathology_changes_the_radiograph(label):
    a = chest.sample_anatomy(np.random.default_rng(5), "F", 65)
    base = chest.sample_findings(np.random.default_rng(6), a, set())
    sick = chest.sample_findings(np.random.default_rng(6), a, {label})
    assert sick.labels[chest.CHEST_LABELS.index(label)] == 1.0 and sum(sick.labels) == 1.0
    diff = _frontal_line(a, sick, 96) - _frontal_line(a, base, 96)  # 0.5 cm pixels: small nodules too
    if label == "pneumothorax":
        assert diff.min() < -0.02  # lung tissue replaced by air: less attenuation
    else:
        assert diff.max() > 0.02  # denser: fluid, soft tissue or a shifted, higher diaphragm


# === Multi-modality ===


def test_multimodal_records_and_images(multimodal):
    combos = {(r.modality, r.anatomy) for r in multimodal.records}
    assert combos == set(phantom.COMBINATIONS)
    assert {m for m, _ in combos} == set(phantom.MODALITIES) and {a for _, a in combos} == set(phantom.ANATOMIES)
    assert multimodal.label_names == ("abnormal",)
    seen = set()
    for r in multimodal.records:
        assert r.sex in ("F", "M") and r.labels in ((0.0,), (1.0,))
        if r.modality in seen:
            continue
        seen.add(r.modality)
        img = multimodal.render(r, 32)
        assert img.shape == (32, 32) and img.dtype == np.float32 and 0.0 <= img.min() and img.max() <= 1.0
        assert img.std() > 0.02
        np.testing.assert_array_equal(img, phantom.MultiModalCohort(num_images=150, seed=5).render(r, 32))
    assert seen == set(phantom.MODALITIES)


def test_metadata_multi_hot(multimodal):
    records = multimodal.records[:40]
    hot = phantom.metadata_multi_hot(records)
    assert hot.shape == (40, len(phantom.MODALITIES) + len(phantom.ANATOMIES)) and hot.dtype == np.float32
    np.testing.assert_array_equal(hot[:, :4].sum(1), 1.0)
    np.testing.assert_array_equal(hot[:, 4:].sum(1), 1.0)
    for row, r in zip(hot, records):
        assert row[phantom.MODALITIES.index(r.modality)] == 1.0
        assert row[4 + phantom.ANATOMIES.index(r.anatomy)] == 1.0
    with pytest.raises(ValueError, match="modality"):
        phantom.metadata_multi_hot([dataclasses.replace(records[0], modality="PET")])
