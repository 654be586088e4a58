"""The plain-PyTorch counterpart of a kmedssl recipe (``kmedssl bench train --plain-torch``).

The one module here that reads kmedssl: the recipe's fields, the encoder and decoder sizes
(``kmedssl.backbones.VIT_SIZES``, ``MAE_DECODER_SIZES``) and the FLOPs formulas (``kmedssl.backbones.flops``),
so that both sides are built from one definition. The models themselves use torch only.
"""

from kmedssl.backbones import MAE_DECODER_SIZES, VIT_SIZES
from kmedssl.backbones.flops import mae_decoder_flops, vit_flops

from .methods import MVMAE, SPCL, SimCLR
from .train import PlainTrainer
from .vit import MAEDecoder, VisionTransformer

METHODS = ("spcl", "mvmae", "simclr")


def unsupported(method, size, recipe=None):
    """Why the plain baseline has no counterpart of ``method`` at the step benchmark's ``size`` (one line), or
    None. At ``"phantom"`` SimCLR (and ModAn-MulSupCon) train a ResNet-18, which has no plain counterpart; at the
    ViT sizes every method trains the recipe's ViT (``kmedssl.bench.phantom.step_encoder``)."""
    if method not in METHODS:
        return f"no plain-PyTorch {method} (the baseline has {', '.join(METHODS)})"
    if size == "phantom" and recipe is not None and hasattr(recipe, "resnet_width"):
        return f"no plain-PyTorch {method} at the phantom size (it trains a ResNet-18 there; the baseline has a ViT)"
    return None


def check_recipe(recipe):
    """Raise ``ValueError`` (one line) where the plain baseline does not implement the recipe's settings."""
    if recipe.method not in METHODS:
        raise ValueError(f"Expected a method with a plain-PyTorch baseline, one of {METHODS}. "
                         f"Received: {recipe.method!r}")
    problems = [f"{name}={getattr(recipe, name)!r}" for name, default in
                (("drop_path_rate", 0.0), ("beta_schedule", "constant"), ("gather", "global"))
                if getattr(recipe, name, default) != default]
    if problems:
        raise ValueError(f"Expected drop_path_rate=0, a constant beta and gather='global' for the plain-PyTorch "
                         f"baseline. Received: {', '.join(problems)}")


def encoder(recipe):
    """The ViT of ``recipe`` (``encoder_size``, ``image_size``, ``patch_size``; one channel)."""
    size = VIT_SIZES[recipe.encoder_size]
    return VisionTransformer(recipe.image_size, recipe.patch_size, 1, size["dim"], size["depth"], size["num_heads"])


def model(recipe):
    """The plain-PyTorch method of ``recipe`` (``SPCL``, ``MVMAE`` or ``SimCLR``) around ``encoder(recipe)``."""
    check_recipe(recipe)
    vit = encoder(recipe)
    if recipe.method == "spcl":
        return SPCL(vit, recipe.mask_ratio, recipe.kappa, recipe.scale_init, recipe.scale_bounds,
                    crop_scale=recipe.crop_scale, jitter=recipe.jitter)
    if recipe.method == "mvmae":
        size = MAE_DECODER_SIZES[recipe.decoder_size]
        decoder = MAEDecoder(vit.num_patches, recipe.patch_size**2, VIT_SIZES[recipe.encoder_size]["dim"],
                             size["dim"], size["depth"], size["num_heads"])
        return MVMAE(vit, decoder, recipe.mask_ratio, recipe.beta, alignment=recipe.alignment,
                     norm_pix=recipe.norm_pix)
    return SimCLR(vit, recipe.temperature, recipe.projection_dim, hidden_dim=VIT_SIZES[recipe.encoder_size]["dim"],
                  crop_size=recipe.crop_size, crop_scale=recipe.crop_scale)


def trainer(recipe, device, precision="fp32", compile=False, total_steps=1000, steps_per_epoch=100):
    """A ``PlainTrainer`` of ``model(recipe)`` with the recipe's optimizer and schedule, as kmedssl's step
    benchmark compiles its model (``recipe.build_optimizer(1000, 100)``)."""
    warmup = min(recipe.warmup_epochs * steps_per_epoch, total_steps // 2)
    return PlainTrainer(model(recipe), recipe.learning_rate, recipe.weight_decay, total_steps=total_steps,
                        warmup_steps=warmup, device=device, compile=compile, optimizer=recipe.optimizer,
                        momentum=recipe.momentum, gradient_clip=recipe.gradient_clip, precision=precision)


def step_flops(recipe):
    """``(forward, train)`` FLOPs per input image of one step's encoder work, counted as kmedssl's methods count
    theirs (``encoder_work``; ``kmedssl.bench.phantom.step_flops``): ``train = 3 x forward`` (nothing frozen)."""
    check_recipe(recipe)
    size = VIT_SIZES[recipe.encoder_size]
    num = (recipe.image_size // recipe.patch_size) ** 2
    patch_dim = recipe.patch_size**2

    def vit(n):
        return vit_flops(n, size["dim"], size["depth"], patch_dim)

    if recipe.method == "spcl":
        visible = num - int(num * recipe.mask_ratio)
        forward = vit(visible // 2) + vit(visible - visible // 2)
    elif recipe.method == "mvmae":
        kept = int(num * (1 - recipe.mask_ratio))
        decoder = MAE_DECODER_SIZES[recipe.decoder_size]
        forward = vit(kept) + mae_decoder_flops(kept, num, size["dim"], patch_dim, decoder["dim"], decoder["depth"])
    else:
        forward = 2 * vit(num)
    return forward, 3 * forward


def measure(spec):
    """The plain-PyTorch row of ``kmedssl bench train --plain-torch`` (``kmedssl.bench.train_step.measure``'s
    counterpart): the same recipe, batch, precision and compilation (``jit_compile="true"``: ``torch.compile``;
    else eager); or a row with ``skipped`` where the baseline has no counterpart."""
    import torch

    from kmedssl.bench.phantom import step_recipe
    from kmedssl.bench.train_step import step_batch, timing_row
    from kmedssl.ops.device import MemoryProbe
    from kmedssl.ops.runtime import compile_error, configure_threads

    configure_threads(spec["threads"])
    recipe = step_recipe(spec["method"], spec["size"], spec["batch_size"])
    reason = unsupported(spec["method"], spec["size"], recipe)
    if reason:
        return {"skipped": reason}
    compile = spec["jit_compile"] == "true"
    if compile and compile_error():
        raise SystemExit(f"Error: {compile_error()}")
    memory = MemoryProbe("torch")
    memory.start()
    x = step_batch(recipe, seed=0)
    plain = trainer(recipe, "cuda" if torch.cuda.is_available() else "cpu", precision=spec["precision"],
                    compile=compile)
    warm = plain.run_steps(x, max(spec["warmup"], 1))
    times = plain.run_steps(x, spec["steps"])
    row = timing_row(spec, recipe, recipe.batch_size * plain.model.images_per_sample, warm, times, memory,
                     step_flops(recipe), "torch")
    encoder_name = f"ViT {recipe.encoder_size}/{recipe.patch_size}, {recipe.image_size} px"
    return {**row, "encoder": encoder_name, "jit_resolved": str(compile)}
