"""The record every data source yields: one image with its study, subject, view, labels and metadata."""

import dataclasses
import math

FRONTAL_VIEWS = ("PA", "AP")
LATERAL_VIEWS = ("LATERAL", "LL")


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One image of a study.

    Attributes:
        image_id: unique id of the image within its source.
        subject_id: the patient (splits are made by subject, SPEC §4).
        study_id: the imaging study the image belongs to (labels are per study).
        view: "PA", "AP", "LATERAL", "LL" for radiographs; "AXIAL", "CORONAL", "SAGITTAL" for slices.
        modality: "XR", "CT", "MR" or "US".
        anatomy: e.g. "chest", "abdomen", "knee", "brain".
        labels: study-level multi-hot labels (0.0/1.0), ordered as the source's label names.
        sex: "F", "M" or "" when unknown.
        age: age in years, NaN when unknown.
        path: file on disk, or None for generated images.
    """

    image_id: str
    subject_id: str
    study_id: str
    view: str
    modality: str
    anatomy: str
    labels: tuple = ()
    sex: str = ""
    age: float = math.nan
    path: str | None = None

    @property
    def is_frontal(self):
        return self.view in FRONTAL_VIEWS

    @property
    def is_lateral(self):
        return self.view in LATERAL_VIEWS
