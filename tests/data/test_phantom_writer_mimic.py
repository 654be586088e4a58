"""The phantom written in the MIMIC-CXR-JPG layout reads back, through the real reader, as the cohort."""

import collections
import csv
import gzip
import io

import numpy as np
import pytest

from kmedssl.data.formats import infer_format, mimic_cxr
from kmedssl.data.images import read_image
from kmedssl.data.pairing import study_pairs
from kmedssl.data.phantom import ChestCohort
from kmedssl.data.phantom.writer import CHEXPERT_COLUMNS, chexpert_labels, write_mimic_cxr
from kmedssl.data.splits import subject_split

pytestmark = pytest.mark.backend_free

SUBJECTS, SIZE, SEED = 8, 32, 3


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_mimic_cxr(tmp_path_factory.mktemp("phantom") / "mimic", num_subjects=SUBJECTS, image_size=SIZE,
                           seed=SEED)


@pytest.fixture(scope="module")
def cohort():
    return ChestCohort(num_subjects=SUBJECTS, seed=SEED)


def _table(path):
    return list(csv.DictReader(io.StringIO(gzip.decompress(path.read_bytes()).decode())))


def _studies(records):
    out = collections.defaultdict(list)
    for r in records:
        out[(r.subject_id, r.study_id)].append(r)
    return out


def test_layout_and_format_inference(written):
    assert written.is_dir() and infer_format(written) == "mimic-cxr"
    for name in ("metadata", "chexpert", "split"):
        assert (written / f"mimic-cxr-2.0.0-{name}.csv.gz").is_file()
    jpegs = sorted(written.glob("files/p*/p*/s*/*.jpg"))
    assert jpegs and all(p.parent.parent.parent.name == p.parent.parent.name[:3] for p in jpegs)


def test_round_trip_views_labels_and_pairs_match_the_cohort(written, cohort):
    ds = mimic_cxr.read(written)
    assert ds.skipped == [] and len(ds.records) == len(cohort.records)
    read, expected = _studies(ds.records), _studies(cohort.records)
    assert sorted(read) == sorted(expected)
    for key, records in expected.items():
        assert sorted(r.view for r in read[key]) == sorted(r.view for r in records)
        assert {r.labels for r in read[key]} == {chexpert_labels(records[0].labels)}
    assert len(study_pairs(ds.records)) == len(study_pairs(cohort.records))


def test_labels_map_onto_their_chexpert_columns(written, cohort):
    rows = {(row["subject_id"], row["study_id"]): row for row in _table(written / "mimic-cxr-2.0.0-chexpert.csv.gz")}
    for record in cohort.records:
        row = rows[(record.subject_id, record.study_id)]
        for name, value in zip(cohort.label_names, record.labels):
            column = row[CHEXPERT_COLUMNS[name]]
            assert (column == "1.0") if value == 1.0 else (column in ("", "0.0", "-1.0"))
        assert (row["No Finding"] == "1.0") == (sum(record.labels) == 0)
    cells = [value for row in rows.values() for value in row.values()]
    assert "-1.0" in cells and "" in cells and "0.0" in cells  # the collapsing rule is exercised


def test_split_is_the_seeded_subject_split(written, cohort):
    expected = {r.subject_id: name for name, records in subject_split(cohort.records, seed=SEED).items()
                for r in records}
    assert mimic_cxr.read(written).splits == expected


def test_images_are_the_rendered_phantom(written, cohort):
    ds = mimic_cxr.read(written)
    rows = {row["dicom_id"]: row for row in _table(written / "mimic-cxr-2.0.0-metadata.csv.gz")}
    for record in ds.records[:4]:
        image = read_image(record.path)
        assert image.shape == (SIZE, SIZE) and rows[record.image_id]["Rows"] == str(SIZE)
        same_study = [r for r in cohort.records if r.study_id == record.study_id and r.view == record.view]
        errors = [np.abs(image - cohort.render(r, image_size=SIZE)).mean() for r in same_study]
        assert min(errors) < 0.02  # JPEG quality 95 of the same rendering


def test_writing_is_deterministic(written, tmp_path):
    again = write_mimic_cxr(tmp_path / "again", num_subjects=SUBJECTS, image_size=SIZE, seed=SEED)
    files = sorted(p.relative_to(written) for p in written.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((written / f).read_bytes() == (again / f).read_bytes() for f in files)


@pytest.mark.parametrize("kwargs", [{"image_size": 4}, {"image_size": 32.0}, {"num_subjects": 0}, {"seed": -1}])
def test_invalid_arguments_raise_before_writing(tmp_path, kwargs):
    with pytest.raises(ValueError, match="Expected"):
        write_mimic_cxr(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
