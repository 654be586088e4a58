"""Opening a data source by name: the embedded phantom cohorts now, on-disk formats later (SPEC §4).

A source has ``records`` (list of ``ImageRecord``), ``label_names`` and ``load_image(record, image_size)``
returning a (image_size, image_size) float32 image in [0, 1].
"""

import dataclasses

from kmedssl.data import phantom

SOURCE_KINDS = ("chest", "multimodal")


@dataclasses.dataclass
class PhantomSource:
    """The embedded phantom data (``kmedssl.data.phantom``) behind the common source interface.

    Args:
        kind: ``"chest"`` (frontal/lateral radiograph studies with pathology labels) or ``"multimodal"``
            (modalities x anatomies with the metadata multi-hot of paper 001).
        size: number of subjects (chest) or images (multimodal).
        seed: seed of the phantom cohort.
    """

    kind: str = "chest"
    size: int = 500
    seed: int = 0

    def __post_init__(self):
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"Expected kind in {SOURCE_KINDS}. Received: kind={self.kind!r}")
        if self.kind == "chest":
            self.cohort = phantom.ChestCohort(num_subjects=self.size, seed=self.seed)
        else:
            self.cohort = phantom.MultiModalCohort(num_images=self.size, seed=self.seed)
        self.records = list(self.cohort.records)
        self.label_names = tuple(getattr(self.cohort, "label_names", ()))

    def load_image(self, record, image_size):
        return self.cohort.render(record, image_size=image_size)


def open_source(data="phantom", kind="chest", size=500, seed=0):
    """Open ``data`` ("phantom") as a source of the given kind.

    Raises:
        ValueError: for anything but ``"phantom"``: on-disk formats (MIMIC-CXR-JPG, CheXpert, ...) are not
            readable by this version.
    """
    if data != "phantom":
        raise ValueError(
            f"Expected data='phantom' (the embedded data set); reading data from a path is not supported "
            f"by this version. Received: data={data!r}"
        )
    return PhantomSource(kind=kind, size=size, seed=seed)
