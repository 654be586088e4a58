"""Supervised baseline recipe (papers 000/001): the encoder trained from scratch on the pathology labels."""

import dataclasses

import numpy as np

from kmedssl.methods.supervised import Supervised
from kmedssl.recipes.base import Recipe


@dataclasses.dataclass
class SupervisedRecipe(Recipe):
    """ViT-B/16 at 224 trained on the multi-label pathology labels with sigmoid BCE, AdamW (paper 000's
    supervised-from-scratch baseline; paper 001 trains its supervised baseline with Adam). ``multi_label`` is
    ``Supervised``'s; the number of classes is the data's number of labels."""

    method = "supervised"
    method_class = Supervised
    computed_arguments = ("num_classes",)
    sizes = {
        "phantom": dict(encoder_size="phantom", image_size=64, patch_size=8, batch_size=64, epochs=20,
                        learning_rate=1e-3, warmup_epochs=2, data_size=500),
    }

    batch_size: int = 256
    warmup_epochs: int = 5
    target = "labels"

    def compute_arguments(self, encoder, total_steps, seed, num_labels):
        return {**super().compute_arguments(encoder, total_steps, seed, num_labels), "num_classes": num_labels}

    def load_sample(self, source, sample):
        return {
            "image": source.load_image(sample, self.image_size)[..., None],
            "labels": np.asarray(sample.labels, dtype="float32"),
        }
