"""ChestX-Det: polygon filling on hand-computed polygons, outline tracing, the phantom layout read back,
out-of-bounds polygons refused."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from kmedssl.cli.data import data
from kmedssl.data.errors import DataError
from kmedssl.data.formats import chestx_det
from kmedssl.data.formats.polygons import fill_polygon, trace_polygons
from kmedssl.data.phantom import CHEST_LABELS, ChestCohort
from kmedssl.data.phantom.chestx_det_writer import SYMS, write_chestx_det
from kmedssl.data.records import FRONTAL_VIEWS

pytestmark = pytest.mark.backend_free

NUM, SIZE, SEED = 3, 32, 4


def _grid(rows):
    return np.array([[c == "#" for c in row] for row in rows])


@pytest.mark.parametrize("points, expected", [
    # a 2 x 2 square: pixel centres (1.5, 1.5) .. (2.5, 2.5)
    ([[1, 1], [3, 1], [3, 3], [1, 3]], ["....", ".##.", ".##.", "...."]),
    # a triangle under x + y = 4: centres with x + y < 4 inside; on the hypotenuse (a right edge): outside
    ([[0, 0], [4, 0], [0, 4]], ["###.", "##..", "#...", "...."]),
    # the whole image: the polygon lies on the border
    ([[0, 0], [4, 0], [4, 4], [0, 4]], ["####", "####", "####", "####"]),
    # touching the top and right borders, a slanted left edge x = 3 - (4 - y) / 2 below y = 2
    ([[2, 0], [4, 0], [4, 4], [3, 4], [2, 2]], ["..##", "..##", "..##", "...#"]),
    # the border run around twice: even-odd empties it (a nonzero rule would fill it)
    ([[0, 0], [4, 0], [4, 4], [0, 4]] * 2, ["....", "....", "....", "...."]),
])
def test_fill_hand_computed(points, expected):
    np.testing.assert_array_equal(fill_polygon(points, 4, 4), _grid(expected))


def test_fill_clips_to_the_image_and_keeps_vertex_order_irrelevant():
    square = [[1, 1], [3, 1], [3, 3], [1, 3]]
    np.testing.assert_array_equal(fill_polygon(square[::-1], 4, 4), fill_polygon(square, 4, 4))
    np.testing.assert_array_equal(fill_polygon([[-2, -2], [6, -2], [6, 6], [-2, 6]], 3, 5), np.ones((3, 5), bool))


def test_trace_hand_computed():
    mask = _grid(["#..", ".##", ".#."])
    assert trace_polygons(mask) == [[[0, 0], [1, 0], [1, 1], [0, 1]],
                                    [[1, 1], [3, 1], [3, 2], [2, 2], [2, 3], [1, 3]]]
    assert trace_polygons(np.zeros((3, 3), bool)) == []
    assert trace_polygons(np.ones((2, 3), bool)) == [[[0, 0], [3, 0], [3, 2], [0, 2]]]
    ring = _grid(["###", "#.#", "###"])  # a hole: filled
    assert trace_polygons(ring) == [[[0, 0], [3, 0], [3, 3], [0, 3]]]


def _holes_filled(mask):
    """The mask plus every background pixel not 8-connected to the border (the oracle of tracing)."""
    height, width = mask.shape
    outside = np.zeros_like(mask)
    stack = [(r, c) for r in range(height) for c in range(width)
             if (r in (0, height - 1) or c in (0, width - 1)) and not mask[r, c]]
    for r, c in stack:
        outside[r, c] = True
    while stack:
        r, c = stack.pop()
        for a in range(max(r - 1, 0), min(r + 2, height)):
            for b in range(max(c - 1, 0), min(c + 2, width)):
                if not mask[a, b] and not outside[a, b]:
                    outside[a, b] = True
                    stack.append((a, b))
    return ~outside


def test_trace_then_fill_gives_the_mask_with_holes_filled():
    rng = np.random.default_rng(0)
    for _ in range(100):
        mask = rng.random((7, 9)) < rng.uniform(0.2, 0.8)
        filled = np.zeros_like(mask)
        for ring in trace_polygons(mask):
            filled |= fill_polygon(ring, 7, 9)
        np.testing.assert_array_equal(filled, _holes_filled(mask))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = write_chestx_det(tmp_path_factory.mktemp("cxd") / "phantom", num_subjects=NUM, image_size=SIZE,
                           seed=SEED)
    return out, ChestCohort(num_subjects=NUM, seed=SEED)


def test_phantom_round_trip(written):
    out, cohort = written
    dataset = chestx_det.read_chestx_det(out)
    frontal = [r for r in cohort.records if r.view in FRONTAL_VIEWS]
    assert len(dataset.records) == len(frontal) and dataset.skipped == []
    assert dataset.structures == chestx_det.CATEGORIES
    outlined = 0
    for n, source in enumerate(frontal):
        record = next(r for r in dataset.records if r.image_id.endswith(f"/{n:05d}.png"))
        image, masks = dataset.load(record)
        np.testing.assert_array_equal(np.round(image * 255), np.round(cohort.render(source, SIZE) * 255))
        truth = cohort.ground_truth(source, SIZE).masks
        for sym, (label, structure) in SYMS.items():
            has = source.labels[CHEST_LABELS.index(label)] == 1.0
            expected = _holes_filled(truth[structure]) if has else np.zeros((SIZE, SIZE), bool)
            np.testing.assert_array_equal(masks[sym], expected)
            assert record.labels[chestx_det.CATEGORIES.index(sym)] == float(bool(expected.any()))
            outlined += bool(expected.any())
    assert outlined > 0
    assert {r.image_id.split("/")[0] for r in dataset.records} <= {"train", "test"}


def _edit(written, tmp_path, change):
    target = tmp_path / "copy"
    shutil.copytree(written[0], target)
    table = target / "ChestX_Det_train.json"
    entries = json.loads(table.read_text())
    index = next(i for i, e in enumerate(entries) if e["polygons"])
    change(entries[index])
    table.write_text(json.dumps(entries))
    return table, entries[index]["file_name"]


def test_out_of_bounds_polygon_is_one_line_naming_the_file_and_polygon(written, tmp_path):
    def push_out(entry):
        entry["polygons"].append([[0, 0], [SIZE + 1, 0], [0, 3]])
        entry["syms"].append("Mass")
    table, name = _edit(written, tmp_path, push_out)
    with pytest.raises(DataError) as raised:
        chestx_det.read_chestx_det(table.parent)
    text = str(raised.value)
    entry = next(e for e in json.loads(table.read_text()) if e["file_name"] == name)
    index = len(entry["polygons"]) - 1
    assert "\n" not in text
    assert text == (f"{table}: {name} polygon {index}: vertex 1 ({SIZE + 1}, 0) is outside the {SIZE}x{SIZE} "
                    f"image (0 <= x <= {SIZE}, 0 <= y <= {SIZE})")
    skipped = chestx_det.read_chestx_det(table.parent, on_error="skip")
    assert len(skipped.skipped) == 1 and len(skipped.records) == len(chestx_det.read_chestx_det(written[0]).records) - 1


@pytest.mark.parametrize("change, message", [
    (lambda e: e["syms"].append("Mass"), "syms but"),
    (lambda e: e["polygons"].__setitem__(0, [[0, 0], [1, 1]]), "polygon 0: expected a list of at least 3"),
    (lambda e: e["polygons"].__setitem__(0, [[0, 0], [1, "a"], [2, 2]]), "polygon 0: vertex 1 is not two"),
])
def test_malformed_entries(written, tmp_path, change, message):
    table, name = _edit(written, tmp_path, change)
    with pytest.raises(DataError, match=f"^{table}: {name}.*{message}"):
        chestx_det.read_chestx_det(table.parent)


def test_cli_writes_the_layout(tmp_path):
    result = CliRunner().invoke(data, ["phantom", "--out", str(tmp_path / "c"), "--layout", "chestx-det",
                                       "--subjects", "2", "--image-size", "16"])
    assert result.exit_code == 0, result.output
    assert "check it with: kmedssl data check" in result.output.splitlines()[-1]
    assert len(chestx_det.read_chestx_det(tmp_path / "c").records) > 0
