"""SimCLR recipe, the contrastive baseline of paper 001 (Table 2)."""

import dataclasses
import typing

from kmedssl.methods.simclr import SimCLR
from kmedssl.recipes.base import AT_LEAST_ONE, POSITIVE, Range, Recipe


@dataclasses.dataclass
class SimCLRRecipe(Recipe):
    """Paper 001 Table 2 / §4.3: ResNet-18 (1-channel 3x3 stride-1 stem), NT-Xent T = 0.1, SGD (lr 0.05,
    momentum 0.9, weight decay 1e-4), 1000 epochs, batch 256, two crops (scale 0.2-1), on a multi-modal,
    multi-anatomy image collection (miniRIN; here the multi-modal phantom). ``SimCLR``'s arguments
    (``temperature``, ``projection_dim``, ``crop_size``, ``crop_scale``, ``gather``) are fields with its defaults;
    the projection head's hidden width is the encoder's feature width. ``encoder_size``, ``patch_size`` and
    ``drop_path_rate`` (ViT settings) are not used: the encoder is a ResNet of width ``resnet_width``, depth
    ``resnet_depth`` (18: basic blocks, the papers'; 50: bottlenecks, e.g. to start from RadImageNet's
    ResNet-50 with ``--init``) and stem ``resnet_stem`` (``cifar``: 3x3 stride 1, the paper's; ``imagenet``: 7x7
    stride 2 + max-pool, torchvision's)."""

    method = "simclr"
    method_class = SimCLR
    computed_arguments = ("hidden_dim",)
    data_kind = "multimodal"
    sizes = {
        "phantom": dict(image_size=32, resnet_width=16, batch_size=64, epochs=10, data_size=1200,
                        learning_rate=0.05),
    }
    limits = {"resnet_width": AT_LEAST_ONE, "resnet_depth": Range(18, 50), "temperature": POSITIVE,
              "projection_dim": AT_LEAST_ONE, "crop_size": AT_LEAST_ONE, "crop_scale": Range(0, 1, low_open=True)}

    image_size: int = 224
    epochs: int = 1000
    batch_size: int = 256
    optimizer: str = "sgd"
    learning_rate: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    data_size: int = 4000
    resnet_width: int = 64
    resnet_depth: int = 18
    resnet_stem: str = "cifar"
    # Side of the two crops; None: the image size.
    crop_size: typing.Optional[int] = None

    def resnet_arguments(self):
        return dict(channels=1, stem=self.resnet_stem, width=self.resnet_width)

    def resnet_class(self):
        from kmedssl.backbones import ResNet18, ResNet50

        classes = {18: ResNet18, 50: ResNet50}
        if self.resnet_depth not in classes:
            raise ValueError(f"Expected resnet_depth in {tuple(classes)}. Received: resnet_depth={self.resnet_depth!r}")
        return classes[self.resnet_depth]

    def build_encoder(self):
        return self.resnet_class()(**self.resnet_arguments())

    def check_encoder(self):
        self.resnet_class().validate_config(self.resnet_arguments())

    def compute_arguments(self, encoder, total_steps, seed, num_labels):
        return {**super().compute_arguments(encoder, total_steps, seed, num_labels), "hidden_dim": encoder.dim}

    def load_sample(self, source, sample):
        return {
            "image": source.load_image(sample, self.image_size)[..., None],
            "metadata": source.metadata(sample),
        }
