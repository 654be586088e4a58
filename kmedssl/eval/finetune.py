"""Full fine-tuning: every encoder layer trainable plus a new linear head, with each method family's recipe.

The papers judge their encoders by fine-tuning them (paper 000 Exp. 1, 003 Table 2, 004 Table 1), each with
its family's recipe (``FineTuneRecipe``):

- **ViT** (``VIT_FINETUNE``): Medical MAE's ViT fine-tuning (Xiao et al. 2023, github.com/lambert-x/medical_mae
  FINETUNE.md, ViT-S/16), which paper 003 follows and which paper 004's (AdamW, warm-up + cosine) matches:
  AdamW (β = 0.9, 0.999), base learning rate 2.5e-4 x batch / 256 at batch 1024, weight decay 0.05 (not on
  biases, norms or the CLS token), 75 epochs with 5 warm-up epochs then cosine decay to 1e-5, layer-wise
  learning-rate decay 0.55, drop path 0.2, sigmoid BCE without label smoothing, the head on the mean of the
  patch tokens (``global_pool``, with a new LayerNorm) and initialised near zero (truncated normal, σ = 2e-5,
  MAE's ``main_finetune.py``).
- **ResNet** (``RESNET_FINETUNE``): paper 001 Table 3: Adam 1e-4 at batch 32, 10 epochs, StepLR(5, 0.1); the
  head keeps Keras's Glorot-uniform initialisation (the paper names none).

Those recipes are sized for ~10^5 images; on the phantom (~1,500 images of 64 px per view) they underfit, so
``VIT_FINETUNE_PHANTOM`` and ``RESNET_FINETUNE_PHANTOM`` keep each recipe's form and change only what the
measurement in docs/evaluation.md ("Fine-tuning protocols") chose (epochs, batch, learning rate). ``fit_finetune``
picks the phantom recipe of the encoder's family unless ``recipe`` says otherwise.

**Layer-wise learning-rate decay** (ELECTRA, BEiT, MAE's ``param_groups_lrd``): with ``L = depth + 1``, the
patch embedding and CLS token are layer 0, block ``i`` is layer ``i + 1``, the final norm, ``fc_norm`` and the head are
layer ``L``; a variable of layer ``l`` is updated with learning rate ``lr · decay^(L − l)`` (its decoupled
weight decay too, as in ``torch.optim.AdamW`` with per-group learning rates). A Swin Transformer is fine-tuned
with the ViT recipe; its layers (``swin_layer_ids``) are numbered the same way over its blocks in order, with
each patch merging in the layer of the block that follows it. Adam is invariant to the scale of
the gradient, so the decay cannot be written as a gradient scale: ``LayerDecayAdamW`` scales the learning rate
per variable.

The loss is sigmoid binary cross-entropy per label (multi-label, as the supervised baseline) or softmax
cross-entropy (one class per image). The caller's encoder is never modified: a copy is fine-tuned.
"""

import dataclasses
import math
import typing

import keras
import numpy as np
from keras import ops

from kmedssl.ops.optimizers import LayerDecayAdamW
from kmedssl.ops.runtime import seed_everything

OPTIMIZERS = ("adamw", "adam")
SCHEDULES = ("cosine", "step")
POOLINGS = ("cls", "mean")


@keras.saving.register_keras_serializable(package="kmedssl")
class FineTuneClassifier(keras.Model):
    """``logits = W · pool(encoder, images) + b``: ``(B, H, W, C)`` images -> ``(B, num_classes)`` logits.

    ``pooling="cls"``: ``encoder.features(images)`` (the ViT's CLS token, a Swin's token 0 (the mean of its
    final tokens), a ResNet's pooled features).
    ``pooling="mean"`` (ViT and Swin encoders; MAE's and Medical MAE's ``global_pool`` fine-tuning):
    ``LayerNorm(mean_i x_i)`` over the patch tokens ``x_i`` of ``encoder(images)``, with a new LayerNorm
    (``fc_norm``). The head computes in float32 whatever the encoder's dtype policy. ``W`` starts Glorot-uniform,
    or truncated normal with standard deviation ``head_init_std`` (MAE's fine-tuning: 2e-5, so ``W ≈ 0``: the
    head's first updates, not its random start, set the direction the encoder is fine-tuned towards).

    Args:
        encoder: a backbone from ``kmedssl.backbones`` (it has ``features(images, training)`` and ``dim``).
        num_classes: outputs of the linear head (labels for multi-label, classes for softmax).
        seed: seed of the head's initialiser; None draws from the global seed.
        pooling: ``"cls"`` or ``"mean"``.
        head_init_std: the head's initial weights' standard deviation (truncated normal, cut at 2σ); None =
            Glorot uniform.
    """

    def __init__(self, encoder, num_classes, seed=None, pooling="cls", head_init_std=None, **kwargs):
        if not hasattr(encoder, "features") or not hasattr(encoder, "dim"):
            raise ValueError(
                f"Expected an encoder with `features(images, training)` and `dim` (a kmedssl backbone). "
                f"Received: {type(encoder).__name__}"
            )
        if num_classes < 1:
            raise ValueError(f"Expected num_classes >= 1. Received: num_classes={num_classes}")
        if pooling not in POOLINGS or (pooling == "mean" and encoder_family(encoder) != "vit"):
            raise ValueError(f"Expected pooling in {POOLINGS} ('mean' for ViT and Swin encoders). Received: "
                             f"pooling={pooling!r} "
                             f"for a {type(encoder).__name__}")
        if head_init_std is not None and not head_init_std > 0:
            raise ValueError(f"Expected head_init_std > 0 or None. Received: head_init_std={head_init_std}")
        super().__init__(**kwargs)

        # === Config ===
        self.encoder = encoder
        self.num_classes = num_classes
        self.seed = seed
        self.pooling = pooling
        self.head_init_std = head_init_std

        # === Layers ===
        self.fc_norm = (keras.layers.LayerNormalization(epsilon=encoder.layer_norm_epsilon, dtype="float32",
                                                        name="fc_norm") if pooling == "mean" else None)
        kernel_initializer = (keras.initializers.GlorotUniform(seed=seed) if head_init_std is None
                              else keras.initializers.TruncatedNormal(stddev=head_init_std, seed=seed))
        self.head = keras.layers.Dense(num_classes, kernel_initializer=kernel_initializer, dtype="float32",
                                       name="head")
        self.build(None)

    def build(self, input_shape):
        if self.fc_norm is not None:
            self.fc_norm.build((None, self.encoder.dim))
        self.head.build((None, self.encoder.dim))

    def call(self, images, training=None):
        if self.pooling == "mean":
            tokens = ops.cast(self.encoder(images, training=training), "float32")  # (B, 1 + N, dim)
            features = self.fc_norm(ops.mean(tokens[:, 1:], axis=1))  # (B, dim)
        else:
            features = ops.cast(self.encoder.features(images, training=training), "float32")  # (B, dim)
        return self.head(features)  # (B, num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "num_classes": self.num_classes,
            "seed": self.seed,
            "pooling": self.pooling,
            "head_init_std": self.head_init_std,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)


@dataclasses.dataclass(frozen=True)
class FineTuneRecipe:
    """How an encoder is fine-tuned (one per method family; ``fit_finetune(..., recipe=)``).

    Args:
        name: a short name for reports.
        optimizer: ``"adamw"`` (decoupled weight decay) or ``"adam"`` (no weight decay).
        base_learning_rate: the peak learning rate is ``base_learning_rate * batch_size / 256`` (MAE's rule).
        batch_size, epochs: mini-batch size and passes over the labelled images.
        weight_decay: decoupled (AdamW) weight decay of the matrices (not biases, norms or the CLS token).
        beta_1, beta_2: Adam's moment decays.
        schedule: ``"cosine"`` (linear warm-up from 0 over ``warmup_epochs``, then cosine decay to
            ``min_learning_rate``, per step) or ``"step"`` (StepLR: ``lr * gamma ** (epoch // step_size)``).
        warmup_epochs: epochs of linear warm-up (cosine; may be fractional; at most half the steps).
        min_learning_rate: the cosine schedule's final learning rate (the peak when that is lower).
        step_size, gamma: StepLR's.
        layer_decay: layer-wise learning-rate decay (1 = none; ViT and Swin encoders only).
        drop_path: stochastic-depth rate of the fine-tuned copy's last block (ViT and Swin encoders; None keeps the
            encoder's own).
        label_smoothing: of the loss's targets (0 = none).
        pooling: the features the head reads, ``"cls"`` or ``"mean"`` (ViT and Swin encoders; ``FineTuneClassifier``).
        head_init_std: the head's initial weights: truncated normal with this standard deviation (MAE: 2e-5), or
            None for Glorot uniform.
        source: where the values come from.
    """

    name: str
    base_learning_rate: float
    batch_size: int
    epochs: int
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    beta_1: float = 0.9
    beta_2: float = 0.999
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    min_learning_rate: float = 0.0
    step_size: int = 5
    gamma: float = 0.1
    layer_decay: float = 1.0
    drop_path: typing.Optional[float] = None
    label_smoothing: float = 0.0
    pooling: str = "cls"
    head_init_std: typing.Optional[float] = None
    source: str = ""

    def __post_init__(self):
        problems = []
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer in {OPTIMIZERS} (received {self.optimizer!r})")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule in {SCHEDULES} (received {self.schedule!r})")
        if not self.base_learning_rate > 0:
            problems.append(f"base_learning_rate > 0 (received {self.base_learning_rate})")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1 and isinstance(self.epochs, int)
                and self.epochs >= 1):
            problems.append(f"integers batch_size >= 1 and epochs >= 1 (received {self.batch_size}, {self.epochs})")
        if self.weight_decay < 0 or (self.optimizer == "adam" and self.weight_decay):
            problems.append(f"weight_decay >= 0, and 0 with optimizer='adam' (received {self.weight_decay})")
        if not (0 <= self.beta_1 < 1 and 0 <= self.beta_2 < 1):
            problems.append(f"0 <= beta_1, beta_2 < 1 (received {self.beta_1}, {self.beta_2})")
        if not (self.warmup_epochs >= 0 and self.min_learning_rate >= 0):
            problems.append(f"warmup_epochs >= 0 and min_learning_rate >= 0 (received {self.warmup_epochs}, "
                            f"{self.min_learning_rate})")
        if not (isinstance(self.step_size, int) and self.step_size >= 1 and 0 < self.gamma <= 1):
            problems.append(f"an integer step_size >= 1 and 0 < gamma <= 1 (received {self.step_size}, {self.gamma})")
        if not 0 < self.layer_decay <= 1:
            problems.append(f"0 < layer_decay <= 1 (received {self.layer_decay})")
        if self.drop_path is not None and not 0 <= self.drop_path < 1:
            problems.append(f"0 <= drop_path < 1 or None (received {self.drop_path})")
        if self.pooling not in POOLINGS:
            problems.append(f"pooling in {POOLINGS} (received {self.pooling!r})")
        if self.head_init_std is not None and not self.head_init_std > 0:
            problems.append(f"head_init_std > 0 or None (received {self.head_init_std})")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"0 <= label_smoothing < 1 (received {self.label_smoothing})")
        if problems:
            raise ValueError(f"Invalid FineTuneRecipe {self.name!r}: expected " + "; ".join(problems))

    @property
    def learning_rate(self):
        """The peak learning rate, ``base_learning_rate * batch_size / 256``."""
        return self.base_learning_rate * self.batch_size / 256

    def replace(self, **changes):
        """A copy with ``changes``; ``learning_rate=`` sets the peak rate (``base_learning_rate`` follows from
        the batch size, the new one when it changes too)."""
        if "learning_rate" in changes:
            batch_size = changes.get("batch_size", self.batch_size)
            changes["base_learning_rate"] = changes.pop("learning_rate") * 256 / batch_size
        return dataclasses.replace(self, **changes)

    def learning_rate_schedule(self, steps_per_epoch):
        """The per-step learning rate (a ``keras.optimizers.schedules.LearningRateSchedule``)."""
        if steps_per_epoch < 1:
            raise ValueError(f"Expected steps_per_epoch >= 1. Received: steps_per_epoch={steps_per_epoch}")
        if self.schedule == "step":
            return step_lr_schedule(self.learning_rate, self.step_size, self.gamma, self.epochs, steps_per_epoch)
        total = self.epochs * steps_per_epoch
        warmup = min(round(self.warmup_epochs * steps_per_epoch), total // 2)  # short runs: half warm-up at most
        minimum = min(self.min_learning_rate, self.learning_rate)
        return warmup_cosine_schedule(self.learning_rate, total, warmup, minimum)


# Medical MAE, ViT-S/16 fine-tuning on chest X-rays (FINETUNE.md; the recipe paper 003 follows): 8 GPUs x 128.
# Its main_finetune_chestxray.py, as MAE's main_finetune.py, re-initialises the ViT's head with
# trunc_normal_(std=2e-5) (torch's bounds are +-2 absolute, so a plain normal; Keras cuts at 2 sigma).
VIT_FINETUNE = FineTuneRecipe(
    name="vit (Medical MAE)", optimizer="adamw", base_learning_rate=2.5e-4, batch_size=1024, epochs=75,
    weight_decay=0.05, beta_1=0.9, beta_2=0.999, schedule="cosine", warmup_epochs=5, min_learning_rate=1e-5,
    layer_decay=0.55, drop_path=0.2, label_smoothing=0.0, pooling="mean", head_init_std=2e-5,
    source="Medical MAE ViT-S/16 fine-tuning (Xiao et al. 2023; paper 003 follows it)",
)
# Paper 001 Table 3: Adam 1e-4, batch 32, 10 epochs, StepLR(5, 0.1) (base rate 1e-4 x 256 / 32).
RESNET_FINETUNE = FineTuneRecipe(
    name="resnet (paper 001)", optimizer="adam", base_learning_rate=1e-4 * 256 / 32, batch_size=32, epochs=10,
    schedule="step", step_size=5, gamma=0.1, source="paper 001 Table 3",
)


def step_lr_schedule(learning_rate, step_size, gamma, epochs, steps_per_epoch):
    """StepLR(step_size, gamma) as a per-step ``PiecewiseConstantDecay``.

    Optimizer step ``t`` (0-based; epoch ``e = t // steps_per_epoch``) gets
    ``learning_rate * gamma ** (e // step_size)``. ``PiecewiseConstantDecay`` gives ``values[i]`` while
    ``step <= boundaries[i]``, so the boundaries are the last steps of each ``step_size``-epoch block:
    ``k * step_size * steps_per_epoch - 1`` for ``k = 1 .. ceil(epochs / step_size)``.
    """
    if learning_rate <= 0 or step_size < 1 or not 0 < gamma <= 1 or epochs < 1 or steps_per_epoch < 1:
        raise ValueError(
            f"Expected learning_rate > 0, step_size >= 1, 0 < gamma <= 1, epochs >= 1 and steps_per_epoch >= 1. "
            f"Received: learning_rate={learning_rate}, step_size={step_size}, gamma={gamma}, epochs={epochs}, "
            f"steps_per_epoch={steps_per_epoch}"
        )
    blocks = math.ceil(epochs / step_size)
    boundaries = [k * step_size * steps_per_epoch - 1 for k in range(1, blocks + 1)]
    values = [float(learning_rate * gamma**k) for k in range(blocks + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def warmup_cosine_schedule(learning_rate, total_steps, warmup_steps, min_learning_rate=0.0):
    """MAE's per-step schedule: ``lr · t / W`` for step ``t < W``, then
    ``m + (lr − m) · (1 + cos(π (t − W) / (T − W))) / 2`` down to ``m = min_learning_rate`` at ``t = T``."""
    if learning_rate <= 0 or total_steps < 1 or not 0 <= warmup_steps <= total_steps \
            or not 0 <= min_learning_rate <= learning_rate:
        raise ValueError(f"Expected learning_rate > 0, total_steps >= 1, 0 <= warmup_steps <= total_steps and "
                         f"0 <= min_learning_rate <= learning_rate. Received: {learning_rate}, {total_steps}, "
                         f"{warmup_steps}, {min_learning_rate}")
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else learning_rate,
        decay_steps=max(total_steps - warmup_steps, 1),
        alpha=min_learning_rate / learning_rate,
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def encoder_family(encoder):
    """``"vit"`` for a ``VisionTransformer`` or a ``SwinTransformer`` (the transformer recipe: AdamW, warm-up +
    cosine, layer-wise decay, drop path), else ``"resnet"`` (paper 001's recipe serves any other encoder)."""
    from kmedssl.backbones.swin import SwinTransformer
    from kmedssl.backbones.vit import VisionTransformer

    return "vit" if isinstance(encoder, (VisionTransformer, SwinTransformer)) else "resnet"


def finetune_recipe(encoder, scale="phantom"):
    """The fine-tuning recipe of ``encoder``'s family: ``scale="paper"`` (``VIT_FINETUNE``, ``RESNET_FINETUNE``)
    or ``"phantom"`` (``VIT_FINETUNE_PHANTOM``, ``RESNET_FINETUNE_PHANTOM``)."""
    if scale not in FINETUNE_RECIPES:
        raise ValueError(f"Expected scale in {tuple(FINETUNE_RECIPES)}. Received: scale={scale!r}")
    return FINETUNE_RECIPES[scale][encoder_family(encoder)]


def vit_layer_ids(model):
    """``({variable path: layer id}, L)`` of a ``FineTuneClassifier`` around a ViT (MAE's
    ``get_layer_id_for_vit``): patch embedding, CLS token and positions 0, block ``i`` ``i + 1``, the final
    norm, ``fc_norm`` and the head ``L = depth + 1``."""
    encoder = model.encoder
    top = len(encoder.blocks) + 1
    groups = [(0, [encoder.cls_token, encoder.position_embedding, *encoder.patch_embedding.variables]),
              *((i + 1, block.variables) for i, block in enumerate(encoder.blocks)),
              (top, [*encoder.norm.variables, *(model.fc_norm.variables if model.fc_norm else ()),
                     *model.head.variables])]
    ids = {v.path: layer for layer, variables in groups for v in variables}
    missing = sorted(v.path for v in model.trainable_variables if v.path not in ids)
    if missing:
        raise ValueError(f"Expected a ViT whose weights are its patch embedding, CLS token, positions, blocks and "
                         f"final norm. Received other trainable weights: {missing}")
    return ids, top


def swin_layer_ids(model):
    """``({variable path: layer id}, L)`` of a ``FineTuneClassifier`` around a Swin, numbered as a ViT's with
    ``L = sum(depths) + 1``: the patch embedding and its norm 0, block ``i`` of all stages in order ``i + 1``, the
    patch merging after stage ``s`` the layer of stage ``s + 1``'s first block, the final norm, ``fc_norm`` and the
    head ``L``. (SimMIM's Swin fine-tuning puts each merging with the block before it instead; the merging feeds
    the next stage, so here it decays with it.)"""
    encoder = model.encoder
    top = len(encoder.blocks) + 1
    groups = [(0, [*encoder.patch_embedding.variables, *encoder.patch_norm.variables]),
              *((i + 1, block.variables) for i, block in enumerate(encoder.blocks))]
    first = 1  # layer id of the first block of stage s + 1, once past stage s
    for depth, merge in zip(encoder.depths, encoder.merges):
        first += depth
        groups.append((first, merge.variables))
    groups.append((top, [*encoder.norm.variables, *(model.fc_norm.variables if model.fc_norm else ()),
                         *model.head.variables]))
    ids = {v.path: layer for layer, variables in groups for v in variables}
    missing = sorted(v.path for v in model.trainable_variables if v.path not in ids)
    if missing:
        raise ValueError(f"Expected a Swin whose weights are its patch embedding, blocks, patch mergings and final "
                         f"norm. Received other trainable weights: {missing}")
    return ids, top


def layer_ids(model):
    """``vit_layer_ids`` or ``swin_layer_ids`` of a ``FineTuneClassifier``, by its encoder."""
    from kmedssl.backbones.swin import SwinTransformer

    return swin_layer_ids(model) if isinstance(model.encoder, SwinTransformer) else vit_layer_ids(model)


def layer_decay_scales(model, layer_decay):
    """``{path: layer_decay ** (L - layer)}`` for every trainable variable of a ViT or Swin ``FineTuneClassifier``."""
    ids, top = layer_ids(model)
    return {v.path: float(layer_decay ** (top - ids[v.path])) for v in model.trainable_variables}


def no_weight_decay_paths(model):
    """MAE's exemptions: every 1-D weight (biases, norm scales and offsets) and the ViT's CLS token; and the Swin's
    relative position bias tables (Microsoft's Swin, ``no_weight_decay_keywords``)."""
    exempt = {v.path for v in model.trainable_variables
              if len(v.shape) <= 1 or v.path.endswith("relative_position_bias_table")}
    cls_token = getattr(model.encoder, "cls_token", None)
    return sorted(exempt | ({cls_token.path} if cls_token is not None else set()))


def build_optimizer(model, recipe, steps_per_epoch):
    """The recipe's optimizer for ``model`` (a ``FineTuneClassifier``), its schedule and layer scales set."""
    scales = {}
    if recipe.layer_decay != 1.0:
        if encoder_family(model.encoder) != "vit":
            raise ValueError(f"Expected layer_decay=1 for a {type(model.encoder).__name__} encoder (layer-wise "
                             f"decay is defined for ViTs and Swins). Received: layer_decay={recipe.layer_decay}")
        scales = layer_decay_scales(model, recipe.layer_decay)
    decay = recipe.weight_decay if recipe.optimizer == "adamw" else 0.0
    return LayerDecayAdamW(recipe.learning_rate_schedule(steps_per_epoch), weight_decay=decay,
                           learning_rate_scales=scales, no_weight_decay=no_weight_decay_paths(model) if decay else (),
                           beta_1=recipe.beta_1, beta_2=recipe.beta_2)


def copy_encoder(encoder, drop_path_rate=None):
    """A trainable copy of ``encoder`` (same architecture and weights; the original is never touched).

    ``drop_path_rate`` (ViT and Swin encoders) rebuilds the copy with that stochastic-depth rate; None keeps the
    encoder's. Drop path has no weights, so the copy's weights equal the encoder's either way.
    """
    config = encoder.get_config()
    if drop_path_rate is not None:
        if "drop_path_rate" not in config:
            raise ValueError(f"Expected an encoder with a drop_path_rate (a ViT) to set one. Received: "
                             f"{type(encoder).__name__}")
        config = {**config, "drop_path_rate": float(drop_path_rate)}
    copy = type(encoder).from_config(config)
    copy.set_weights(encoder.get_weights())
    copy.trainable = True
    return copy


def _check_inputs(images, labels, multi_label):
    if images.ndim != 4:
        raise ValueError(f"Expected images of shape (N, H, W, C). Received: images.shape={images.shape}")
    if labels.ndim != 2 or len(labels) != len(images):
        raise ValueError(
            f"Expected labels of shape (N, K) with N = {len(images)} images. Received: labels.shape={labels.shape}"
        )
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("Expected 0/1 labels. Received: values outside {0, 1}")
    if not multi_label and not np.all(labels.sum(axis=1) == 1):
        raise ValueError("Expected one-hot label rows (exactly one 1 per row) with multi_label=False. "
                         f"Received: row sums {sorted(set(labels.sum(axis=1).tolist()))}")


def fit_finetune(encoder, images, labels, recipe=None, seed=0, multi_label=True, **changes):
    """Fine-tune a copy of ``encoder`` with a new linear head on labelled images.

    Loss: ``-mean_{i,k} [y_ik log σ(z_ik) + (1 - y_ik) log(1 - σ(z_ik))]`` (multi-label) or
    ``-mean_i sum_k y_ik log softmax(z_i)_k`` (one-hot rows), ``z = FineTuneClassifier(images)``, targets
    smoothed by the recipe's ``label_smoothing``. The recipe's optimizer, schedule (per step), layer-wise
    learning-rate decay and drop path; mini-batches reshuffled every epoch. Python, NumPy, Keras and the
    backend are seeded with ``seed``, so a run is reproducible.

    Args:
        encoder: a kmedssl backbone; it is copied, never modified.
        images: (N, H, W, C) float images. labels: (N, K) 0/1 (one-hot rows when ``multi_label=False``).
        recipe: a ``FineTuneRecipe``, or ``"phantom"`` / ``"paper"`` for that scale of the encoder family's
            recipe (``finetune_recipe``); None = ``"phantom"``.
        seed: seed of the head initialisation, the shuffling and drop path.
        multi_label: sigmoid BCE per label (True) or softmax cross-entropy (False).
        **changes: recipe fields to replace (``FineTuneRecipe.replace``, e.g. ``epochs=4, learning_rate=3e-3``).

    Returns:
        ``predict(images) -> (M, K)`` float32 probabilities (sigmoid or softmax of the logits); its attributes
        ``model`` (the fine-tuned ``FineTuneClassifier``) and ``recipe`` (the ``FineTuneRecipe`` used).
    """
    images, labels = np.asarray(images, "float32"), np.asarray(labels, "float32")
    _check_inputs(images, labels, multi_label)
    if recipe is None or isinstance(recipe, str):
        recipe = finetune_recipe(encoder, recipe or "phantom")
    if not isinstance(recipe, FineTuneRecipe):
        raise ValueError(f"Expected a FineTuneRecipe, 'phantom' or 'paper'. Received: recipe={recipe!r}")
    recipe = recipe.replace(**changes) if changes else recipe
    steps_per_epoch = math.ceil(len(images) / recipe.batch_size)

    seed_everything(seed)
    vit = encoder_family(encoder) == "vit"
    model = FineTuneClassifier(copy_encoder(encoder, recipe.drop_path if vit else None), labels.shape[1], seed=seed,
                               pooling=recipe.pooling if vit else "cls", head_init_std=recipe.head_init_std)
    smoothing = {"label_smoothing": recipe.label_smoothing}
    loss = (keras.losses.BinaryCrossentropy(from_logits=True, **smoothing) if multi_label
            else keras.losses.CategoricalCrossentropy(from_logits=True, **smoothing))
    model.compile(optimizer=build_optimizer(model, recipe, steps_per_epoch), loss=loss)
    model.fit(images, labels, batch_size=recipe.batch_size, epochs=recipe.epochs, shuffle=True, verbose=0)

    def predict(new_images):
        new_images = np.asarray(new_images, "float32")
        if new_images.ndim != 4:
            raise ValueError(f"Expected images of shape (M, H, W, C). Received: images.shape={new_images.shape}")
        logits = np.asarray(model.predict(new_images, batch_size=max(recipe.batch_size, 256), verbose=0),
                            "float64")  # (M, K)
        if multi_label:
            return (1.0 / (1.0 + np.exp(-logits))).astype("float32")
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (shifted / shifted.sum(axis=1, keepdims=True)).astype("float32")

    predict.model, predict.recipe = model, recipe  # the fine-tuned classifier and the recipe used
    return predict

# Phantom scale (docs/evaluation.md, "Fine-tuning protocols"): each family's form, with the epochs, batch and
# learning rate measured so that scratch fine-tuning at 100 % labels (1,459 frontal 64-px images of the
# 1,000-subject chest cohort) reaches the supervised baseline's macro AUROC on the phantom test cohort.
VIT_FINETUNE_PHANTOM = VIT_FINETUNE.replace(
    name="vit (Medical MAE, phantom)", batch_size=16, epochs=18, learning_rate=1e-3, warmup_epochs=1,
    layer_decay=0.9, drop_path=0.1, pooling="cls", head_init_std=None,
    source=VIT_FINETUNE.source + "; batch, epochs, learning rate, layer decay and drop path measured on the phantom; "
                                 "Glorot head (MAE's near-zero head underfits its short schedule)",
)
RESNET_FINETUNE_PHANTOM = RESNET_FINETUNE.replace(
    name="resnet (paper 001, phantom)", epochs=6, step_size=3, learning_rate=1e-3,
    source=RESNET_FINETUNE.source + "; epochs (StepLR at half) and learning rate measured on the phantom",
)
FINETUNE_RECIPES = {
    "paper": {"vit": VIT_FINETUNE, "resnet": RESNET_FINETUNE},
    "phantom": {"vit": VIT_FINETUNE_PHANTOM, "resnet": RESNET_FINETUNE_PHANTOM},
}
