"""The recipe: every setting of one pretraining run, as a dataclass with named sizes.

A method's recipe (``kmedssl/recipes/<method>.py``) subclasses ``Recipe``: its field defaults are the
paper's settings (``size="paper"``), and ``sizes["phantom"]`` overrides them for a CPU-minutes run on
the embedded phantom data. It knows how to build the encoder, the method model, the optimizer and the
training data.
"""

import abc
import dataclasses
import typing

import keras

from kmedssl.data.pipeline import ViewDataset
from kmedssl.data.sources import PhantomSource
from kmedssl.ops.optimizers import adam, adamw

OPTIMIZERS = ("adamw", "sgd", "adam")


@dataclasses.dataclass
class Recipe(abc.ABC):
    """Settings shared by every method (defaults: MAE/ViT-B conventions; subclasses override).

    Encoder: ``encoder_size`` ("phantom", "tiny", "small", "base"), ``image_size``, ``patch_size``,
    ``drop_path_rate``. Optimisation: ``epochs``, ``steps_per_epoch`` (None = one pass over the data),
    ``batch_size``, ``optimizer`` (adamw | sgd | adam), ``learning_rate`` (peak, after linear warm-up,
    then cosine decay to 0), ``weight_decay``, ``momentum`` (SGD), ``warmup_epochs``, ``gradient_clip``
    (global norm, 0 = off). Data: ``data_size`` (phantom subjects or images), ``data_seed`` (phantom
    cohort), ``split_seed`` (subject split; pretraining uses the train split only), ``workers``.
    Monitoring: ``probe_every`` (log a kNN probe AUROC of the encoder on up to 256 labelled validation
    images every N epochs as ``probe_auroc``; 0 = off).
    """

    method: typing.ClassVar[str] = ""
    data_kind: typing.ClassVar[str] = "chest"
    sizes: typing.ClassVar[dict] = {}

    # === Encoder ===
    encoder_size: str = "base"
    image_size: int = 224
    patch_size: int = 16
    drop_path_rate: float = 0.0
    # === Optimisation ===
    epochs: int = 100
    steps_per_epoch: typing.Optional[int] = None
    batch_size: int = 256
    optimizer: str = "adamw"
    learning_rate: float = 1.5e-4
    weight_decay: float = 0.05
    momentum: float = 0.9
    warmup_epochs: int = 0
    gradient_clip: float = 0.0
    # === Data ===
    data_size: int = 500
    data_seed: int = 0
    split_seed: int = 0
    workers: int = 1
    # === Monitoring ===
    probe_every: int = 0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Expected optimizer in {OPTIMIZERS}. Received: optimizer={self.optimizer!r}")
        for name in ("epochs", "batch_size", "image_size", "patch_size", "data_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"Expected {name} >= 1. Received: {name}={getattr(self, name)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"Expected steps_per_epoch >= 1 or None. Received: {self.steps_per_epoch}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"Expected image_size divisible by patch_size. Received: image_size={self.image_size}, "
                f"patch_size={self.patch_size}"
            )

    # === Building blocks ===
    def build_encoder(self):
        from kmedssl.backbones import vision_transformer

        return vision_transformer(
            self.encoder_size, image_size=self.image_size, patch_size=self.patch_size, channels=1,
            drop_path_rate=self.drop_path_rate,
        )

    @abc.abstractmethod
    def build_model(self, encoder, total_steps, seed, num_labels):
        """The method's ``keras.Model`` around ``encoder`` (``num_labels``: labels of the source, for
        supervised heads)."""

    def build_optimizer(self, total_steps, steps_per_epoch):
        """Linear warm-up to ``learning_rate`` over ``warmup_epochs``, then cosine decay to 0."""
        warmup = min(self.warmup_epochs * steps_per_epoch, total_steps // 2)
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup else self.learning_rate,
            decay_steps=max(total_steps - warmup, 1),
            warmup_target=self.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
        clip = {"global_clipnorm": self.gradient_clip} if self.gradient_clip else {}
        if self.optimizer == "adamw":
            return adamw(schedule, weight_decay=self.weight_decay, **clip)
        if self.optimizer == "adam":
            return adam(schedule, **clip)
        # Keras applies SGD weight decay decoupled (w -= lr * wd * w), PyTorch's SGD couples it to the gradient.
        return keras.optimizers.SGD(schedule, momentum=self.momentum, weight_decay=self.weight_decay, **clip)

    # === Data ===
    def training_samples(self, records):
        """The samples one epoch iterates over (images by default; pairs for multi-view methods)."""
        return list(records)

    def load_sample(self, source, sample):
        """Deterministic arrays of one sample (decoded image(s), labels, metadata)."""
        return {"image": source.load_image(sample, self.image_size)[..., None]}

    def views(self):
        """Per-sample random view builder of the pipeline, or None when the model makes its own views."""
        return None

    target = None

    def training_data(self, source, records, seed, on_error="raise"):
        samples = self.training_samples(records)
        if len(samples) < self.batch_size:
            raise ValueError(
                f"Expected at least batch_size={self.batch_size} training samples for {self.method}. "
                f"Received: {len(samples)} samples; lower --batch-size or use more data."
            )
        return ViewDataset(
            samples, load=lambda sample: self.load_sample(source, sample), views=self.views(),
            batch_size=self.batch_size, target=self.target, seed=seed, cache=isinstance(source, PhantomSource),
            on_error=on_error, workers=self.workers,
        )
