"""ACE: anatomically consistent embeddings via composition and decomposition (paper 004 §3; SPEC §3.5).

Stages: ``update_teacher`` (EMA, training only) -> student and teacher encoders on both crops ->
global branch (overlap-pooled tokens -> DINO heads -> ``ace_global_loss``, Eq. 1) and local branch
(``Composer`` / ``Decomposer`` on student tokens, matched to normalised teacher tokens with Gaussian targets
stamped from the views' pairs -> ``ace_matching_loss_from_pairs``, Eqs. 2-7) ->
``lambda_global L_global + lambda_comp L_comp + lambda_decomp L_decomp`` (Eq. 8) -> centre update.
"""

import math
import numbers

import keras
from keras import ops

from kmedssl.backbones.flops import encoder_flops
from kmedssl.backbones.heads import Composer, Decomposer, DINOHead
from kmedssl.distributed import all_reduce_mean
from kmedssl.losses.ace import ace_global_loss, ace_matching_loss_from_pairs
from kmedssl.methods.base import PretrainingMethod
from kmedssl.views.augment import RandomIntensityJitter, check_non_negative
from kmedssl.views.ace import validate_kernel


# === Method ===

@keras.saving.register_keras_serializable(package="kmedssl")
class ACE(PretrainingMethod):
    """ACE with a ViT (or Swin) student and its EMA teacher.

    Per sample (``kmedssl.views.ace.ACEViews``): crop C1 (2g x 2g cells) and crop C2 (g x g cells) of one
    image, both g x g tokens, overlap masks and the matching pairs (``ace_matching_pairs``).

    - Global (Eq. 1): tokens of each crop are mean-pooled over its overlap mask; DINO heads give
      ``(B, K)`` logits; ``ace_global_loss`` crosses teacher C2 with student C1 and teacher C1 with
      student C2, with the teacher centred by ``center``.
    - Composition (Eqs. 2-5): logits ``exp(logit_scale) n(teacher(C1)) @ Composer(student(C2))^T``,
      ``(B, g^2, g^2/4)``, against the Gaussians (``comp_kernel``, ``sigma``) stamped from ``paired_comp`` on the
      g/2 x g/2 grid, with ``alpha_comp``.
    - Decomposition (Eqs. 6-7): logits ``exp(logit_scale) n(teacher(C2)) @ Decomposer(student(C1))^T``,
      ``(B, g^2, 4g^2)``, against the Gaussians (``decomp_kernel``, ``sigma``) stamped from ``paired_decomp`` on
      the 2g x 2g grid, with ``alpha_decomp``.
    - Total (Eq. 8): ``lambda_global L_global + lambda_comp L_comp + lambda_decomp L_decomp``.

    Both matching terms go through ``ace_matching_loss_from_pairs``: the fused Triton kernel on torch + CUDA
    (the logits and targets are never materialised), the ``keras.ops`` reference elsewhere.

    Teacher. ``teacher`` is a copy of ``encoder`` (built from its config, same initial weights) and
    ``teacher_head`` a copy of ``student_head``; both are non-trainable and their outputs are wrapped in
    ``stop_gradient``. They follow ``theta_t <- m theta_t + (1 - m) theta_s`` with
    ``m = m_final - (m_final - m_0) (1 + cos(pi min(s / total_steps, 1))) / 2`` (DINO's cosine schedule,
    paper A.3: 0.996 -> 1). Keras computes the loss before the optimizer step, and on JAX only variable
    assignments made inside ``call``/``compute_loss`` survive, so the EMA is applied in the graph with
    ``assign`` at the start of every training ``call``, from the student weights as they are then (after
    the previous optimizer step): the teacher that scores step k is the EMA of the students up to step
    k - 1, as in DINO's loop (loss, step, then EMA). ``ema_step`` (a non-trainable int32 variable, not the
    optimizer's iterations) counts these updates and drives the schedule.

    Centre. After the loss (training only): ``center <- center_momentum center + (1 - center_momentum)
    mean(teacher rows)``, where the rows are the teacher head outputs of both crops pooled over the
    overlap and over the rest of each crop (a row whose region is empty is left out of the mean).

    Args:
        encoder: a ``kmedssl.backbones.VisionTransformer`` or ``SwinTransformer`` with ``grid_size`` even: any
            encoder whose ``encoder(crop)[:, 1:]`` is its row-major ``grid_size x grid_size`` grid of ``dim``-wide
            tokens and that ``type(encoder).from_config`` copies (a Swin's final-stage grid; its token 0, the mean
            of that grid, is not used).
        total_steps: training steps of the whole run (horizon of the EMA schedule).
        head_dim: K, DINO head output size.
        head_hidden_dim, head_bottleneck_dim: DINO head widths.
        teacher_temperature, student_temperature: tau_t, tau_s of the global loss (0.04, 0.1).
        center_momentum: centre EMA momentum (0.9).
        teacher_momentum, teacher_momentum_final: start and end of the teacher EMA schedule (0.996, 1).
        alpha_comp, alpha_decomp: positive weights of the matching losses (0.9, 0.99).
        lambda_global, lambda_comp, lambda_decomp: loss weights of Eq. 8 (0.1, 1, 1).
        logit_scale_init: initial value of the trainable log logit scale (log(1/0.07)).
        comp_kernel, decomp_kernel: odd Gaussian window of the composition / decomposition targets (paper 3
            and 3; the authors' code uses 5 for decomposition).
        sigma: Gaussian width of the targets in grid cells (paper 1).
        jitter: brightness and contrast strength of an independent intensity jitter of each crop (probability
            0.8; ``RandomIntensityJitter``), the photometric part of the paper's ``x = T_1(C_1), x' = T_2(C_2)``
            (§3.2, Algorithm 1's ``augment``). Only photometric: a geometric transform would move the cells the
            matching pairs refer to. Student and teacher see the same jittered crop, as in DINO. 0 (default):
            none.
        seed: seed of the jitter's random draws.

    Input: ``{"crop_1": (B, S, S, C), "crop_2": (B, S, S, C), "mask_1": (B, g^2), "mask_2": (B, g^2),
    "paired_comp": (B, g^2) int32, "paired_decomp": (B, g^2) int32}`` (pairs are read by ``compute_loss_terms``
    only).
    Output of ``call``: ``student_1``, ``student_2``, ``teacher_1``, ``teacher_2`` ``(B, K)`` (overlap-pooled
    head outputs), ``teacher_1_rest``, ``teacher_2_rest`` ``(B, K)`` (pooled over the rest of each crop),
    ``teacher_tokens_1``, ``teacher_tokens_2`` ``(B, g^2, C)`` (teacher patch tokens of C1 and C2, no
    gradient), ``composed`` ``(B, g^2/4, C)`` and ``decomposed`` ``(B, 4g^2, C)`` (student tokens after the
    composer / decomposer).
    """

    loss_terms = ("global", "composition", "decomposition")

    def __init__(
        self,
        encoder,
        total_steps,
        head_dim=65536,
        head_hidden_dim=2048,
        head_bottleneck_dim=256,
        teacher_temperature=0.04,
        student_temperature=0.1,
        center_momentum=0.9,
        teacher_momentum=0.996,
        teacher_momentum_final=1.0,
        alpha_comp=0.9,
        alpha_decomp=0.99,
        lambda_global=0.1,
        lambda_comp=1.0,
        lambda_decomp=1.0,
        logit_scale_init=math.log(1 / 0.07),
        comp_kernel=3,
        decomp_kernel=3,
        sigma=1.0,
        jitter=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(encoder, **kwargs)
        self._validate(total_steps=total_steps, teacher_temperature=teacher_temperature,
                       student_temperature=student_temperature, center_momentum=center_momentum,
                       teacher_momentum=teacher_momentum, teacher_momentum_final=teacher_momentum_final,
                       alpha_comp=alpha_comp, alpha_decomp=alpha_decomp)
        if encoder.grid_size % 2:
            raise ValueError(f"Expected an encoder with an even grid_size. Received: grid_size={encoder.grid_size}")
        validate_kernel(comp_kernel=comp_kernel, decomp_kernel=decomp_kernel)
        if not sigma > 0:
            raise ValueError(f"Expected sigma > 0. Received: sigma={sigma}")

        # === Config ===
        self.total_steps = int(total_steps)
        self.head_dim = int(head_dim)
        self.head_hidden_dim = int(head_hidden_dim)
        self.head_bottleneck_dim = int(head_bottleneck_dim)
        self.teacher_temperature = float(teacher_temperature)
        self.student_temperature = float(student_temperature)
        self.center_momentum = float(center_momentum)
        self.teacher_momentum = float(teacher_momentum)
        self.teacher_momentum_final = float(teacher_momentum_final)
        self.alpha_comp = float(alpha_comp)
        self.alpha_decomp = float(alpha_decomp)
        self.lambda_global = float(lambda_global)
        self.lambda_comp = float(lambda_comp)
        self.lambda_decomp = float(lambda_decomp)
        self.logit_scale_init = float(logit_scale_init)
        self.comp_kernel = int(comp_kernel)
        self.decomp_kernel = int(decomp_kernel)
        self.sigma = float(sigma)
        self.jitter = check_non_negative("jitter", jitter)
        self.seed = seed

        # === Layers ===
        self.student_head = DINOHead(self.head_dim, self.head_hidden_dim, self.head_bottleneck_dim,
                                     name="student_head")
        self.student_head.build((None, encoder.dim))
        self.teacher = type(encoder).from_config({**encoder.get_config(), "name": f"teacher_{encoder.name}"})
        self.teacher_head = DINOHead.from_config({**self.student_head.get_config(), "name": "teacher_head"})
        self.teacher_head.build((None, encoder.dim))
        for clone, source in ((self.teacher, encoder), (self.teacher_head, self.student_head)):
            clone.set_weights(source.get_weights())
            clone.trainable = False
        self.composer = Composer(encoder.dim, name="composer")
        self.composer.build((None, None, encoder.dim))
        self.decomposer = Decomposer(encoder.dim, name="decomposer")
        self.decomposer.build((None, None, encoder.dim))
        self.augment = None
        if self.jitter > 0:
            self.augment = RandomIntensityJitter(brightness=self.jitter, contrast=self.jitter, probability=0.8,
                                                 seed=seed, name="crop_jitter")
            self.augment.build((None, None, None, encoder.channels))

        # === State ===
        self.logit_scale = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(self.logit_scale_init), autocast=False,
            name="logit_scale",
        )
        self.center = self.add_weight(shape=(self.head_dim,), initializer="zeros", trainable=False,
                                      autocast=False, aggregation="mean", name="center")
        self.ema_step = self.add_weight(shape=(), initializer="zeros", dtype="int32", trainable=False,
                                        aggregation="only_first_replica", name="ema_step")

    @staticmethod
    def _validate(total_steps, teacher_temperature, student_temperature, **fractions):
        if not (isinstance(total_steps, numbers.Integral) and total_steps >= 1):
            raise ValueError(f"Expected an integer total_steps >= 1. Received: total_steps={total_steps}")
        for name, value in (("teacher_temperature", teacher_temperature),
                            ("student_temperature", student_temperature)):
            if not value > 0:
                raise ValueError(f"Expected {name} > 0. Received: {name}={value}")
        for name, value in fractions.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Expected {name} in [0, 1]. Received: {name}={value}")

    # --- teacher ---

    def momentum(self, step):
        """Teacher EMA momentum after ``step`` updates: cosine from ``teacher_momentum`` to the final value."""
        progress = ops.minimum(ops.cast(step, "float32") / self.total_steps, 1.0)
        start, final = self.teacher_momentum, self.teacher_momentum_final
        return final - (final - start) * (1.0 + ops.cos(math.pi * progress)) / 2.0

    def update_teacher(self):
        """One in-graph EMA step of the teacher encoder and head towards the current student weights."""
        m = self.momentum(self.ema_step)
        teacher = self.teacher.weights + self.teacher_head.weights
        student = self.encoder.weights + self.student_head.weights
        for t, s in zip(teacher, student, strict=True):
            s_value = ops.stop_gradient(ops.cast(s, t.dtype))
            t.assign(ops.cast(m, t.dtype) * t + ops.cast(1.0 - m, t.dtype) * s_value)
        self.ema_step.assign_add(ops.ones((), "int32"))

    # --- forward ---

    def call(self, inputs, training=False):
        if training:
            self.update_teacher()
        crop_1, crop_2 = inputs["crop_1"], inputs["crop_2"]
        if training and self.augment is not None:  # T_1, T_2: independent draws per crop and sample
            crop_1, crop_2 = self.augment(crop_1, training=True), self.augment(crop_2, training=True)
        mask_1, mask_2 = ops.cast(inputs["mask_1"], "float32"), ops.cast(inputs["mask_2"], "float32")  # (B, N)
        s_1 = self.encoder(crop_1, training=training)[:, 1:]  # (B, N, C)
        s_2 = self.encoder(crop_2, training=training)[:, 1:]
        t_1 = ops.stop_gradient(self.teacher(crop_1, training=False)[:, 1:])
        t_2 = ops.stop_gradient(self.teacher(crop_2, training=False)[:, 1:])

        # Global branch: overlap-pooled tokens -> heads.
        students = self.student_head(ops.concatenate([_masked_mean(s_1, mask_1), _masked_mean(s_2, mask_2)], 0))
        student_1, student_2 = ops.split(students, 2, axis=0)  # (B, K) each
        pooled_teacher = [_masked_mean(t_1, mask_1), _masked_mean(t_2, mask_2),
                          _masked_mean(t_1, 1.0 - mask_1), _masked_mean(t_2, 1.0 - mask_2)]
        teachers = ops.stop_gradient(self.teacher_head(ops.concatenate(pooled_teacher, 0)))  # (4B, K)
        teacher_1, teacher_2, teacher_1_rest, teacher_2_rest = ops.split(teachers, 4, axis=0)

        # Local branch: composed C2 <-> teacher C1, decomposed C1 <-> teacher C2 (matched in compute_loss_terms).
        return {
            "student_1": student_1,
            "student_2": student_2,
            "teacher_1": teacher_1,
            "teacher_2": teacher_2,
            "teacher_1_rest": teacher_1_rest,
            "teacher_2_rest": teacher_2_rest,
            "teacher_tokens_1": t_1,
            "teacher_tokens_2": t_2,
            "composed": self.composer(s_2),  # (B, N/4, C)
            "decomposed": self.decomposer(s_1),  # (B, 4N, C)
        }

    # --- loss ---

    def compute_loss_terms(self, x, y, y_pred, training):
        global_loss = ace_global_loss(
            y_pred["student_1"], y_pred["student_2"], y_pred["teacher_1"], y_pred["teacher_2"], self.center,
            student_temperature=self.student_temperature, teacher_temperature=self.teacher_temperature,
        )
        grid = self.encoder.grid_size
        comp_loss = ace_matching_loss_from_pairs(
            y_pred["teacher_tokens_1"], y_pred["composed"], self.logit_scale, x["paired_comp"], grid=grid // 2,
            kernel_size=self.comp_kernel, sigma=self.sigma, alpha=self.alpha_comp,
        )  # (B, N, N/4) matching
        decomp_loss = ace_matching_loss_from_pairs(
            y_pred["teacher_tokens_2"], y_pred["decomposed"], self.logit_scale, x["paired_decomp"],
            grid=2 * grid, kernel_size=self.decomp_kernel, sigma=self.sigma, alpha=self.alpha_decomp,
        )  # (B, N, 4N) matching
        loss = self.lambda_global * global_loss + self.lambda_comp * comp_loss + self.lambda_decomp * decomp_loss
        if training:
            self.update_center(x, y_pred)
        return loss, {"global": global_loss, "composition": comp_loss, "decomposition": decomp_loss}

    def update_center(self, x, y_pred):
        """``center <- m center + (1 - m) mean(teacher rows)`` over the non-empty pooled regions of the global
        batch (sums and counts averaged over the data-parallel replicas, as DINO all-reduces its centre)."""
        rows = ops.stack([ops.cast(y_pred[k], "float32") for k in
                          ("teacher_1", "teacher_2", "teacher_1_rest", "teacher_2_rest")], axis=0)  # (4, B, K)
        mask_1, mask_2 = ops.cast(x["mask_1"], "float32"), ops.cast(x["mask_2"], "float32")
        counts = ops.stack([ops.sum(mask_1, -1), ops.sum(mask_2, -1), ops.sum(1.0 - mask_1, -1),
                            ops.sum(1.0 - mask_2, -1)], axis=0)  # (4, B)
        valid = ops.cast(counts > 0, "float32")
        row_sum = all_reduce_mean(ops.stop_gradient(ops.sum(rows * valid[..., None], axis=(0, 1))))  # (K,)
        batch_center = row_sum / ops.maximum(all_reduce_mean(ops.sum(valid)), 1.0)
        m = self.center_momentum
        self.center.assign(m * self.center + (1.0 - m) * batch_center)

    def encoder_work(self, image_size):
        """The student encoder on both crops; frozen: the EMA teacher on both crops."""
        return 2 * encoder_flops(self.encoder), 2 * encoder_flops(self.teacher)

    def get_config(self):
        config = super().get_config()
        config.update(
            total_steps=self.total_steps,
            head_dim=self.head_dim,
            head_hidden_dim=self.head_hidden_dim,
            head_bottleneck_dim=self.head_bottleneck_dim,
            teacher_temperature=self.teacher_temperature,
            student_temperature=self.student_temperature,
            center_momentum=self.center_momentum,
            teacher_momentum=self.teacher_momentum,
            teacher_momentum_final=self.teacher_momentum_final,
            alpha_comp=self.alpha_comp,
            alpha_decomp=self.alpha_decomp,
            lambda_global=self.lambda_global,
            lambda_comp=self.lambda_comp,
            lambda_decomp=self.lambda_decomp,
            logit_scale_init=self.logit_scale_init,
            comp_kernel=self.comp_kernel,
            decomp_kernel=self.decomp_kernel,
            sigma=self.sigma,
            jitter=self.jitter,
            seed=self.seed,
        )
        return config


def _masked_mean(tokens, mask):
    """``(B, N, C), (B, N) -> (B, C)``: mean of the tokens where ``mask`` is 1 (zeros when it is empty)."""
    mask = ops.cast(mask, tokens.dtype)[..., None]
    return ops.sum(tokens * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)
