"""kmedssl on the torch backend against hand-written PyTorch, side by side in one process (S-PCL and MVMAE).

Run:  OMP_NUM_THREADS=2 python benchmarks/torch_overhead.py [--methods spcl,mvmae] [--sizes phantom,vit-s16]
          [--batch-size 16] [--steps 5] [--warmup 2] [--jit-compile] [--profile 2]

Per method and size, kmedssl's model is built exactly as ``kmedssl bench train`` builds it
(``kmedssl.bench.phantom.step_recipe``: the phantom recipe, or ViT-S/16 at 224 px, batch 16) and the
plain-PyTorch model of ``benchmarks/plain_torch`` gets the same architecture, mask ratio, loss and optimizer.
The kmedssl weights are copied into it and the encoder (and decoder) outputs of both are compared on the
real batch, so both train the same network. Then ``warmup`` steps of each run, and ``steps`` rounds
alternate one kmedssl ``train_on_batch`` with one plain step on the same NumPy batch (alternating spreads
the noise of a shared machine over both). Printed: median step time of each and the ratio kmedssl / plain
(target <= 1.10 at ViT-S/16).

``--jit-compile``: kmedssl compiled with ``jit_compile=True`` (Keras wraps its train step in ``torch.compile``)
against the plain forward in ``torch.compile``. ``--profile N``: ``torch.profiler`` over N more steps of
each, printing the top operators by self CPU time, aten operator calls per step and the per-step time not
spent inside aten operators (Python and framework overhead).
"""

import argparse
import os
import statistics
import sys
import time

os.environ["KERAS_BACKEND"] = "torch"  # this comparison is about the torch backend

try:
    import triton  # noqa: F401  (before anything imports TensorFlow, SPEC §10; torch.compile uses it)
except ImportError:
    pass

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from plain_torch import MAEDecoder, MVMAE, SPCL, PlainTrainer, VisionTransformer  # noqa: E402

from kmedssl.ops.runtime import configure_threads  # noqa: E402
from kmedssl.bench.phantom import prepare_step, run_steps, step_encoder, step_recipe  # noqa: E402

METHODS = ("spcl", "mvmae")
SIZES = ("phantom", "vit-s16")
MAX_OUTPUT_DIFFERENCE = 1e-3  # float32 round-off is ~1e-6; a larger difference means another architecture


# === Same network: copy kmedssl's weights into the plain modules ===


def _assign(parameter, value):
    with torch.no_grad():
        parameter.copy_(torch.as_tensor(np.asarray(keras.ops.convert_to_numpy(value))))


def _copy_dense(linear, dense):
    _assign(linear.weight, keras.ops.transpose(dense.kernel))
    _assign(linear.bias, dense.bias)


def _copy_norm(norm, keras_norm):
    _assign(norm.weight, keras_norm.gamma)
    _assign(norm.bias, keras_norm.beta)


def _copy_blocks(blocks, keras_blocks):
    for block, source in zip(blocks, keras_blocks, strict=True):
        _copy_norm(block.norm1, source.attention_norm)
        _copy_dense(block.attn.qkv, source.attention.qkv)
        _copy_dense(block.attn.proj, source.attention.proj)
        _copy_norm(block.norm2, source.mlp_norm)
        _copy_dense(block.fc1, source.mlp_hidden)
        _copy_dense(block.fc2, source.mlp_output)


def plain_encoder(encoder):
    """A ``plain_torch.VisionTransformer`` with the configuration and weights of a kmedssl ViT."""
    plain = VisionTransformer(encoder.image_size, encoder.patch_size, encoder.channels, encoder.dim, encoder.depth,
                              encoder.num_heads, encoder.mlp_ratio, encoder.layer_norm_epsilon, encoder.input_mean,
                              encoder.input_std)
    _copy_dense(plain.patch_embedding, encoder.patch_embedding)
    _assign(plain.cls_token, encoder.cls_token)
    _assign(plain.position_embedding, encoder.position_embedding)
    _copy_blocks(plain.blocks, encoder.blocks)
    _copy_norm(plain.norm, encoder.norm)
    return plain


def plain_decoder(decoder):
    """A ``plain_torch.MAEDecoder`` with the configuration and weights of a kmedssl MAE decoder."""
    plain = MAEDecoder(decoder.num_patches, decoder.patch_dim, decoder.encoder_dim, decoder.dim, decoder.depth,
                       decoder.num_heads, decoder.mlp_ratio, decoder.layer_norm_epsilon)
    _copy_dense(plain.embedding, decoder.embedding)
    _assign(plain.mask_token, decoder.mask_token)
    _assign(plain.position_embedding, decoder.position_embedding)
    _copy_blocks(plain.blocks, decoder.blocks)
    _copy_norm(plain.norm, decoder.norm)
    _copy_dense(plain.prediction, decoder.prediction)
    return plain


def plain_model(name, model):
    """The plain-PyTorch counterpart of kmedssl's ``model`` (same weights) and the largest output difference
    of their encoders (and decoder) on random inputs of the model's shape."""
    encoder = plain_encoder(model.encoder)
    side, channels = model.encoder.image_size, model.encoder.channels
    images = np.random.default_rng(0).uniform(size=(2, side, side, channels)).astype("float32")
    with torch.no_grad():
        expected = keras.ops.convert_to_numpy(model.encoder(images))
        difference = np.abs(encoder(torch.from_numpy(images)).numpy() - expected)
    if name == "spcl":
        plain = SPCL(encoder, model.mask_ratio, model.kappa, model.scale_init)
        _assign(plain.log_scale, model.log_scale)
        return plain, float(difference.max())
    decoder = plain_decoder(model.decoder)
    tokens = np.random.default_rng(1).normal(size=(2, 5, model.encoder.dim)).astype("float32")
    ids_restore = np.stack([np.random.default_rng(i).permutation(decoder.num_patches) for i in range(2)])
    with torch.no_grad():
        expected = keras.ops.convert_to_numpy(model.decoder(tokens, ids_restore.astype("int32")))
        actual = decoder(torch.from_numpy(tokens), torch.from_numpy(ids_restore)).numpy()
    difference = max(float(difference.max()), float(np.abs(actual - expected).max()))
    return MVMAE(encoder, decoder, model.mask_ratio, model.beta), difference


# === Measurement ===


def profile(step, steps, rows):
    """Run ``step`` ``steps`` times under ``torch.profiler``; print the top operators; return (aten calls per
    step, milliseconds per step outside aten operators)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        wall = run_wall(step, steps)
    events = profiler.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=rows))
    aten = [e for e in events if e.key.startswith("aten::")]
    calls = sum(e.count for e in aten) / steps
    inside = sum(e.self_cpu_time_total for e in aten) / 1000 / steps  # microseconds -> ms per step
    return calls, 1000 * wall / steps - inside


def run_wall(step, steps):
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def compare(name, size, args, device):
    recipe = step_recipe(name, size, args.batch_size)
    model, x, y, _ = prepare_step(recipe, seed=0, encoder=step_encoder(recipe, size),
                                  jit_compile=bool(args.jit_compile))
    plain, difference = plain_model(name, model)
    if difference > MAX_OUTPUT_DIFFERENCE:
        raise SystemExit(f"Error: the plain-PyTorch {name} differs from kmedssl's (max |diff| {difference:.2e}); "
                         "the comparison would not be of the same network.")
    warmup = min(recipe.warmup_epochs * 100, 500)
    trainer = PlainTrainer(plain, recipe.learning_rate, recipe.weight_decay, total_steps=1000, warmup_steps=warmup,
                           device=device, compile=bool(args.jit_compile))
    run_steps(model, x, y, max(args.warmup, 1))
    trainer.run_steps(x, max(args.warmup, 1))
    ours, theirs = [], []
    for _ in range(args.steps):
        ours += run_steps(model, x, y, 1)
        theirs += trainer.run_steps(x, 1)
    row = dict(method=name, size=size, batch=recipe.batch_size, difference=difference,
               kmedssl_ms=1000 * statistics.median(ours), plain_ms=1000 * statistics.median(theirs))
    row["ratio"] = row["kmedssl_ms"] / row["plain_ms"]
    if args.profile:
        print(f"\n=== {name} {size}: kmedssl (torch backend), {args.profile} profiled steps ===")
        row["kmedssl_calls"], row["kmedssl_outside_ms"] = profile(lambda: model.train_on_batch(x, y), args.profile,
                                                                  args.rows)
        print(f"\n=== {name} {size}: plain PyTorch, {args.profile} profiled steps ===")
        row["plain_calls"], row["plain_outside_ms"] = profile(lambda: trainer.train_step(x), args.profile, args.rows)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--batch-size", type=int, help="Batch size (default: the recipe's; 16 at vit-s16).")
    parser.add_argument("--steps", type=int, default=5, help="Timed rounds (one step of each per round).")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps of each first (at least 1).")
    parser.add_argument("--jit-compile", action="store_true", help="torch.compile on both sides.")
    parser.add_argument("--profile", type=int, default=0, help="Profile this many extra steps of each.")
    parser.add_argument("--rows", type=int, default=15, help="Operators listed per profile.")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    sizes = [s for s in args.sizes.split(",") if s]
    if not methods or any(m not in METHODS for m in methods) or not sizes or any(s not in SIZES for s in sizes):
        sys.exit(f"Error: expected --methods from {METHODS} and --sizes from {SIZES}. "
                 f"Received: {args.methods!r}, {args.sizes!r}")
    configure_threads()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__}, keras {keras.__version__}, device {device}, {torch.get_num_threads()} threads, "
          f"{'torch.compile' if args.jit_compile else 'eager'}; {args.steps} alternating rounds after "
          f"{args.warmup} warm-up steps", flush=True)
    rows = [compare(name, size, args, device) for size in sizes for name in methods]
    header = (f"{'method':<7} {'size':<8} {'batch':>5} {'kmedssl ms':>11} {'plain ms':>10} {'ratio':>6} "
              f"{'max |diff|':>10}")
    if args.profile:
        header += f" {'aten calls/step k|p':>20} {'outside aten ms k|p':>20}"
    print(f"\n{header}")
    for r in rows:
        line = (f"{r['method']:<7} {r['size']:<8} {r['batch']:>5} {r['kmedssl_ms']:>11.1f} {r['plain_ms']:>10.1f} "
                f"{r['ratio']:>6.2f} {r['difference']:>10.1e}")
        if args.profile:
            line += (f" {r['kmedssl_calls']:>9.0f} |{r['plain_calls']:>9.0f} "
                     f"{r['kmedssl_outside_ms']:>9.1f} |{r['plain_outside_ms']:>9.1f}")
        print(line)


if __name__ == "__main__":
    main()
