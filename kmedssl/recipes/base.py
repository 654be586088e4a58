"""The recipe: every setting of one pretraining run, as a dataclass with named sizes.

A method's recipe (``kmedssl/recipes/<method>.py``) subclasses ``Recipe``: its field defaults are the
paper's settings (``size="paper"``), and ``sizes["phantom"]`` overrides them for a CPU-minutes run on
the embedded phantom data. It knows how to build the encoder, the method model, the optimizer and the
training data.

Every constructor argument of the recipe's ``method_class`` is a field of the recipe, made from the
constructor's signature (``method_parameters``) with the method's default, unless the recipe computes it
when it builds the model (``computed_arguments``: the encoder, ``total_steps``, the seed, ...). A recipe
declares such a field itself only to change the method's default (a paper value, with a comment); declaring
it with the method's own default is refused, so each default lives in one place. ``build_model`` passes every
field the constructor takes, plus the computed arguments (``compute_arguments``).

Every numeric field is checked when a recipe is made, before anything is written: it must be a finite
number in its ``Range``, declared in the ``limits`` of the class that adds the field (a float without one
must be finite, an integer >= 0).
"""

import dataclasses
import inspect
import math
import typing

import keras
import numpy as np

from kmedssl.data.pipeline import ViewDataset
from kmedssl.data.sources import PhantomSource
from kmedssl.ops.optimizers import adam, adamw
from kmedssl.training.precision import check_precision

# ``jit_compile`` field -> ``model.compile(jit_compile=...)``.
JIT_COMPILE = {"auto": "auto", "true": True, "false": False}

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


# === Method arguments as recipe fields ===


def method_parameters(method_class):
    """``{name: default}`` of every constructor argument of ``method_class`` (a ``PretrainingMethod``): its
    own and those it hands on to its bases through ``**kwargs`` (``MulSupCon`` -> ``SimCLR``), the most
    derived default first; a required argument (``encoder``, ...) has ``inspect.Parameter.empty``. The
    arguments ``PretrainingMethod`` hands on to ``keras.Model`` (``name``, ...) are left out."""
    from kmedssl.methods.base import PretrainingMethod

    parameters = {}
    for klass in method_class.__mro__:
        if klass is PretrainingMethod:
            break
        if "__init__" not in vars(klass):
            continue
        signature = list(inspect.signature(klass.__init__).parameters.values())[1:]  # without self
        for parameter in signature:
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                parameters.setdefault(parameter.name, parameter.default)
        if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in signature):
            break
    return parameters


def field_type(default):
    """The recipe field type of a method default: bool, int, float, str or tuple."""
    for kind in (bool, int, float, str, tuple):
        if isinstance(default, kind):
            return kind
    raise TypeError(f"Expected a method default of type bool, int, float, str or tuple. Received: {default!r}")


def add_method_fields(recipe_class):
    """Make each argument of ``recipe_class.method_class`` that is not computed a field of ``recipe_class``
    (before ``dataclasses.dataclass`` reads its annotations), with the method's default.

    An argument the class declares itself keeps the class's default, which must differ from the method's; an
    inherited field whose default is the method's is kept (with its type); an argument whose default is None
    must be declared (its type cannot be read from the default).
    """
    method = recipe_class.method_class
    parent = next(base for base in recipe_class.__mro__[1:] if dataclasses.is_dataclass(base))
    inherited = {field.name: field for field in dataclasses.fields(parent)}
    annotations = recipe_class.__dict__.get("__annotations__")
    if annotations is None:
        annotations = {}
        recipe_class.__annotations__ = annotations
    computed = computed_argument_names(recipe_class)
    for name, default in method_parameters(method).items():
        if name in computed:
            continue
        if default is inspect.Parameter.empty:
            raise TypeError(f"{recipe_class.__name__}: {method.__name__} requires {name}; compute it "
                            f"(computed_arguments and compute_arguments)")
        if name in annotations:
            if default is not None and vars(recipe_class).get(name) == default:
                raise TypeError(f"{recipe_class.__name__}.{name} repeats the default of {method.__name__} "
                                f"({default!r}); leave it out, the recipe takes it from the method")
            continue
        field = inherited.get(name)
        if field is not None and field.default == default:
            continue
        if default is None and field is None:
            raise TypeError(f"{recipe_class.__name__}: declare the type of {name} (the default of "
                            f"{method.__name__} is None)")
        annotations[name] = field.type if field is not None else field_type(default)
        setattr(recipe_class, name, default)


def computed_argument_names(recipe_class):
    """The method arguments ``recipe_class`` computes when it builds the model (its ``computed_arguments``
    and those of its bases)."""
    return {name for cls in recipe_class.__mro__ for name in vars(cls).get("computed_arguments", ())}


@dataclasses.dataclass
class Recipe:
    """Settings shared by every method (defaults: MAE/ViT-B conventions; subclasses override).

    Encoder: ``encoder_size`` ("phantom", "tiny", "small", "base"), ``image_size``, ``patch_size``,
    ``drop_path_rate``. Optimisation: ``epochs``, ``steps_per_epoch`` (None = one pass over the data),
    ``batch_size``, ``optimizer`` (adamw | sgd | adam), ``learning_rate`` (peak, after linear warm-up,
    then cosine decay to 0), ``weight_decay``, ``momentum`` (SGD), ``warmup_epochs``, ``gradient_clip``
    (global norm, 0 = off), ``precision`` (``fp32``, ``bf16`` or ``fp16``: the layers' compute dtype, weights
    and optimizer state in float32; ``kmedssl.training.precision``), ``jit_compile`` (``auto``: Keras's choice
    per backend, eager torch; ``true``: ``torch.compile`` of the step on torch, XLA on JAX and TensorFlow, with
    a one-line notice and an eager step where torch cannot compile; ``false``). Data: ``data_size`` (phantom subjects or images), ``data_seed`` (phantom
    cohort), ``split_seed`` (subject split; pretraining uses the train split only), ``workers``.
    Monitoring: ``probe_every`` (log a kNN probe AUROC of the encoder on up to 256 labelled validation
    images every N epochs as ``probe_auroc``; 0 = off), ``health_every`` (log the SSL health of the embeddings
    of up to 256 validation images every N epochs, ``kmedssl.training.ssl_health``; 0 = off).
    """

    method: typing.ClassVar[str] = ""
    # The method's keras.Model class; every argument of its constructor is a field or computed.
    method_class: typing.ClassVar[type | None] = None
    # Method arguments computed when the model is built (``compute_arguments``), not fields; subclasses add.
    computed_arguments: typing.ClassVar[tuple] = ("encoder", "total_steps", "seed")
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
        "health_every": NON_NEGATIVE,
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
    precision: str = "fp32"
    jit_compile: str = "auto"
    # === Data ===
    data_size: int = 500
    data_seed: int = 0
    split_seed: int = 0
    workers: int = 1
    # === Monitoring ===
    probe_every: int = 0
    health_every: int = 1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.method_class is not None:
            add_method_fields(cls)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Expected optimizer in {OPTIMIZERS}. Received: optimizer={self.optimizer!r}")
        check_precision(self.precision)
        if self.jit_compile not in JIT_COMPILE:
            raise ValueError(f"Expected jit_compile in {tuple(JIT_COMPILE)}. Received: jit_compile={self.jit_compile!r}")
        check_numeric_fields(self)
        self.check_encoder()

    # === Encoder ===
    def vit_arguments(self):
        """The arguments of ``kmedssl.backbones.vision_transformer`` besides the size."""
        return dict(image_size=self.image_size, patch_size=self.patch_size, channels=1,
                    drop_path_rate=self.drop_path_rate)

    def build_encoder(self):
        from kmedssl.backbones import vision_transformer

        return vision_transformer(self.encoder_size, **self.vit_arguments())

    def check_encoder(self):
        """The encoder's own checks of its settings (``validate_config``), run when the recipe is made, before
        anything is built or written: here the ViT's (e.g. image_size divisible by patch_size)."""
        from kmedssl.backbones.vit import VIT_SIZES, VisionTransformer

        if self.encoder_size not in VIT_SIZES:
            raise ValueError(f"Expected encoder_size in {sorted(VIT_SIZES)}. Received: "
                             f"encoder_size={self.encoder_size!r}")
        VisionTransformer.validate_config({**VIT_SIZES[self.encoder_size], **self.vit_arguments()})

    # === Method ===
    def compute_arguments(self, encoder, total_steps, seed, num_labels):
        """The method arguments named in ``computed_arguments``, from the run (``num_labels``: labels of the
        source, for supervised heads). Subclasses add theirs to ``super()``'s."""
        return {"encoder": encoder, "total_steps": total_steps, "seed": seed}

    def method_arguments(self, encoder, total_steps, seed, num_labels):
        """Every constructor argument of ``method_class``: the recipe's field of each name, then the computed
        ones (``compute_arguments``, which may also refine a field, e.g. a None that means "as another")."""
        parameters = method_parameters(self.method_class)
        fields = {field.name for field in dataclasses.fields(self)}
        computed = self.compute_arguments(encoder, total_steps=total_steps, seed=seed, num_labels=num_labels)
        return {**{name: getattr(self, name) for name in parameters if name in fields},
                **{name: value for name, value in computed.items() if name in parameters}}

    def build_model(self, encoder, total_steps, seed, num_labels):
        """The method's ``keras.Model`` around ``encoder``."""
        return self.method_class(**self.method_arguments(encoder, total_steps, seed, num_labels))

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
