"""ACE recipe (paper 004 §4 and appendix A.3)."""

import dataclasses

from kmedssl.methods.ace import ACE
from kmedssl.recipes.base import AT_LEAST_ONE, FINITE, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, Recipe
from kmedssl.views.ace import ACEViews

ENCODERS = ("vit", "swin")


@dataclasses.dataclass
class ACERecipe(Recipe):
    """Paper 004 A.3: ViT-B with 14 x 14 tokens per 448-px crop (patch 32) cut from 1024-px images (32 x 32
    cells), batch 8 x 4 GPUs, 100 epochs, AdamW lr 5e-4 with 10 warm-up epochs, weight decay 0.04, drop path
    0.1, gradient clipping 0.8 (applied here to the global norm). The paper raises the weight decay to 0.4
    on a cosine schedule; Keras optimizers take a constant weight decay, so it stays at 0.04 here.
    Pretraining images: the frontal radiographs (ChestX-ray14 in the paper). Every argument of ``ACE``
    (heads, temperatures, momenta, α, λ, kernels, σ) is a field with ACE's default, the paper's.

    ``encoder`` picks the encoder family: ``"vit"`` (the paper's) or ``"swin"``, ``swin_transformer(encoder_size,
    image_size=image_size)`` (sizes ``kmedssl.backbones.SWIN_SIZES``: phantom, tiny, small, base), whose final
    ``g x g`` grid is ACE's token grid. A Swin's patch size is its size's, so ``patch_size`` is not used; one token
    is ``token_stride() = patch 2^(stages - 1)`` pixels (16 for the phantom Swin, 32 for Swin-B: at 448 px, Swin-B
    gives the paper's 14 x 14 tokens from 32 px cells)."""

    method = "ace"
    method_class = ACE
    sizes = {
        # 96 px crops of 12 px tokens (8 x 8 tokens: the step of 64 px crops of 8 px tokens) from 240 px sources:
        # above scratch in every judged cell on both seeds, where 64 px crops of 8 px tokens were not on seed 1
        # (docs/evaluation.md, "The seventh round").
        "phantom": dict(encoder_size="phantom", image_size=96, patch_size=12, image_cells=20, batch_size=32,
                        epochs=20, learning_rate=5e-4, warmup_epochs=2, drop_path_rate=0.0, head_dim=1024,
                        head_hidden_dim=256, head_bottleneck_dim=64, data_size=500),
    }
    limits = {
        **{name: AT_LEAST_ONE for name in ("image_cells", "head_dim", "head_hidden_dim", "head_bottleneck_dim",
                                           "comp_kernel", "decomp_kernel")},
        **{name: POSITIVE for name in ("teacher_temperature", "student_temperature", "sigma")},
        **{name: UNIT_INTERVAL for name in ("center_momentum", "teacher_momentum", "teacher_momentum_final",
                                            "alpha_comp", "alpha_decomp")},
        **{name: NON_NEGATIVE for name in ("lambda_global", "lambda_comp", "lambda_decomp", "jitter")},
        "logit_scale_init": FINITE,
    }

    image_size: int = 448
    patch_size: int = 32
    image_cells: int = 32
    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 5e-4
    warmup_epochs: int = 10
    weight_decay: float = 0.04
    drop_path_rate: float = 0.1
    gradient_clip: float = 0.8
    # The encoder family (ENCODERS): "vit" or "swin".
    encoder: str = "vit"

    # === Encoder ===
    def swin_arguments(self):
        """The arguments of ``kmedssl.backbones.swin_transformer`` besides the size (no ``patch_size``)."""
        return dict(image_size=self.image_size, channels=1, drop_path_rate=self.drop_path_rate)

    def build_encoder(self):
        if self.encoder == "vit":
            return super().build_encoder()
        from kmedssl.backbones import swin_transformer

        return swin_transformer(self.encoder_size, **self.swin_arguments())

    def check_encoder(self):
        if self.encoder not in ENCODERS:
            raise ValueError(f"Expected encoder in {ENCODERS}. Received: encoder={self.encoder!r}")
        if self.encoder == "vit":
            return super().check_encoder()
        from kmedssl.backbones.swin import SWIN_SIZES, SwinTransformer

        if self.encoder_size not in SWIN_SIZES:
            raise ValueError(f"Expected encoder_size in {sorted(SWIN_SIZES)} for encoder='swin'. Received: "
                             f"encoder_size={self.encoder_size!r}")
        SwinTransformer.validate_config({**SWIN_SIZES[self.encoder_size], **self.swin_arguments()})
        if (self.image_size // self.token_stride()) % 2:
            raise ValueError(f"Expected an even token grid image_size / {self.token_stride()} for ACE on a Swin. "
                             f"Received: image_size={self.image_size}")

    def token_stride(self):
        """Pixels per side of one encoder token (one ACE cell): the ViT's ``patch_size``, or the Swin's patch size
        times 2 per patch merging."""
        if self.encoder == "vit":
            return self.patch_size
        from kmedssl.backbones.swin import SWIN_SIZES

        size = SWIN_SIZES[self.encoder_size]
        return size["patch_size"] * 2 ** (len(size["depths"]) - 1)

    # === Data ===
    def training_samples(self, records):
        return [r for r in records if r.is_frontal]

    def load_sample(self, source, sample):
        return {"image": source.load_image(sample, self.image_cells * self.token_stride())}

    def views(self):
        builder = ACEViews(grid=self.image_size // self.token_stride(), image_cells=self.image_cells)
        return lambda arrays, rng: builder(arrays["image"], rng)
