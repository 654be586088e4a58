"""Metadata multi-hot of paper 001 §3.1: one-hot modality ⊕ one-hot anatomy."""

import numpy as np


class MetadataEncoder:
    """Encodes a record's modality and anatomy as ``[one-hot modality, one-hot anatomy]``.

    Args:
        modalities, anatomies: the vocabularies, in column order.
    """

    def __init__(self, modalities, anatomies):
        self.modalities = tuple(modalities)
        self.anatomies = tuple(anatomies)

    @classmethod
    def from_records(cls, records):
        """Vocabularies of the modalities and anatomies present in ``records``, sorted."""
        return cls(sorted({r.modality for r in records}), sorted({r.anatomy for r in records}))

    @property
    def size(self):
        return len(self.modalities) + len(self.anatomies)

    def __call__(self, record):
        """(len(modalities) + len(anatomies),) float32 multi-hot of one record."""
        if record.modality not in self.modalities or record.anatomy not in self.anatomies:
            raise ValueError(
                f"Expected modality in {self.modalities} and anatomy in {self.anatomies}. "
                f"Received: {record.modality!r}, {record.anatomy!r} (image {record.image_id})"
            )
        vector = np.zeros(self.size, dtype=np.float32)
        vector[self.modalities.index(record.modality)] = 1.0
        vector[len(self.modalities) + self.anatomies.index(record.anatomy)] = 1.0
        return vector
