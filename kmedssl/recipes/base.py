"""The recipe: every setting of one pretraining run, as a dataclass with named sizes.

A method's recipe (``kmedssl/recipes/<method>.py``) subclasses ``Recipe``: its field defaults are the
paper's settings (``size="paper"``), and ``sizes["phantom"]`` overrides them for a CPU-minutes run on
the embedded phantom data. It knows how to build the encoder, the method model, the optimizer and the
training data.

Every numeric field is checked when a recipe is made, before anything is written: it must be a finite
number in its ``Range``, declared in the ``limits`` of the class that adds the field (a float without one
must be finite, an integer >= 0).
"""

import abc
import dataclasses
import math
import typing

import keras
import numpy as np

from kmedssl.data.pipeline import ViewDataset
from kmedssl.data.sources import PhantomSource
from kmedssl.ops.optimizers import adam, adamw

OPTIMIZERS = ("adamw", "sgd", "adam")


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric recipe field accepts: finite numbers from ``low`` to ``high`` (None: no bound),
    each bound included unless ``low_open`` / ``high_open``."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value):
        return ((isinstance(value, (int, np.integer)) or math.isfinite(value))
                and (self.low is None or value > self.low or (value == self.low and not self.low_open))
                and (self.high is None or value < self.high or (value == self.high and not self.high_open)))

    def __str__(self):
        if self.high is None:
            return "" if self.low is None else f" {'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f" {'<' if self.high_open else '<='} {self.high:g}"
        return f" in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


FINITE = Range()
POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
FRACTION = Range(0, 1, high_open=True)  # [0, 1)
UNIT_INTERVAL = Range(0, 1)  # [0, 1]


def check_numeric_fields(recipe):
    """Raise ``ValueError`` for the first numeric field of ``recipe`` that is not a number in its range.

    Integer fields need integers, float fields numbers, tuple fields numbers each in the range; a field
    typed ``Optional[...]`` may also be None.
    """
    limits = field_limits(type(recipe))
    for field in dataclasses.fields(recipe):
        kind, optional = numeric_kind(field.type)
        value = getattr(recipe, field.name)
        if kind is None or (value is None and optional):
            continue
        limit = limits.get(field.name, FINITE if kind is float else NON_NEGATIVE)
        if not in_range(value, kind, limit):
            expected = {int: "an integer", float: "a finite number", tuple: "a tuple of finite numbers"}[kind]
            raise ValueError(f"Expected {field.name} to be {expected}{limit}{' or None' if optional else ''}. "
                             f"Received: {field.name}={value!r}")


def field_limits(recipe_class):
    """``{field: Range}`` of ``recipe_class``: the ``limits`` of it and of its bases."""
    return {key: limit for cls in reversed(recipe_class.__mro__) for key, limit in vars(cls).get("limits", {}).items()}


def numeric_kind(annotation):
    """``(kind, optional)`` of a field's type: ``kind`` is int, float, tuple, or None for a non-numeric field."""
    optional = typing.get_origin(annotation) is typing.Union and type(None) in typing.get_args(annotation)
    if optional:
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return (annotation if annotation in (int, float, tuple) else None), optional


def in_range(value, kind, limit):
    if kind is tuple:
        return isinstance(value, tuple) and all(in_range(v, float, limit) for v in value)
    types = (int, np.integer) if kind is int else (int, float, np.integer, np.floating)
    return isinstance(value, types) and not isinstance(value, bool) and value in limit


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
    # The range of each numeric field this class adds (``check_numeric_fields``; subclasses add theirs).
    limits: typing.ClassVar[dict] = {
        "image_size": AT_LEAST_ONE, "patch_size": AT_LEAST_ONE, "drop_path_rate": FRACTION,
        "epochs": AT_LEAST_ONE, "steps_per_epoch": AT_LEAST_ONE, "batch_size": AT_LEAST_ONE,
        "learning_rate": POSITIVE, "weight_decay": NON_NEGATIVE, "momentum": FRACTION,
        "warmup_epochs": NON_NEGATIVE, "gradient_clip": NON_NEGATIVE,
        "data_size": AT_LEAST_ONE, "data_seed": NON_NEGATIVE, "split_seed": NON_NEGATIVE, "workers": AT_LEAST_ONE,
        "probe_every": NON_NEGATIVE,
    }

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
        check_numeric_fields(self)
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
