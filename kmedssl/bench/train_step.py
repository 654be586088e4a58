"""Training-step benchmark of every method, per backend: step time, images/s, peak memory, analytic GFLOPs per
image, achieved TFLOP/s and MFU, optionally against the same step in plain PyTorch (the same as ``kmedssl bench
train``).

Run:  OMP_NUM_THREADS=2 python -m kmedssl.bench.train_step [--methods spcl,mvmae]
          [--sizes phantom,vit-s16,vit-b16,vit-b16-512] [--backends torch,tensorflow,jax] [--batch-size 16]
          [--steps 5] [--warmup 2] [--jit-compile auto,true] [--precision fp32,bf16] [--plain-torch]
          [--peak-tflops 989] [--threads 2] [--csv runs/bench-train.csv]
      (or ``kmedssl bench train``, or ``python benchmarks/train_step.py`` in a source checkout)

Every (size, backend, jit mode, precision, method) runs in a fresh Python process (``python -m
kmedssl.bench.train_step --worker SPEC``, so an installed kmedssl needs no source checkout): the backend must
be chosen before Keras is imported, and a fresh process gives a clean peak-memory figure. There the method is
built from ``kmedssl.bench.phantom.step_recipe`` (the phantom recipe, or one ViT for every method: ViT-S/16 or
ViT-B/16 at 224 px, ViT-B/16 at 512 px) under the recipe's ``precision`` (``kmedssl.training.precision``: fp32,
or bf16/fp16 layers with float32 weights), one batch of real phantom views is made by the input pipeline, the
model is compiled with ``jit_compile`` (auto: Keras's default, i.e. eager torch, a tf.function graph on
TensorFlow/CPU, XLA on TensorFlow/GPU, jax.jit on JAX; true: torch.compile on torch, XLA on TensorFlow and
JAX), ``warmup`` steps run (the first one, with tracing and compilation, is reported as "first s") and
``steps`` further ``model.train_on_batch`` calls on that batch are timed (data loading excluded).

``--plain-torch`` adds, per (size, jit mode, precision, method), the same step written in plain PyTorch
(``benchmarks/plain_torch``: same ViT, masking, views, loss, optimizer and batch; autocast for bf16/fp16,
``F.scaled_dot_product_attention``, ``torch.compile`` when jit is ``true`` (eager otherwise), fused AdamW/SGD
on CUDA), in its own worker process, and the ratio of the step times kmedssl / plain on each kmedssl row. It
exists for S-PCL, MVMAE and SimCLR (SimCLR only at the ViT sizes: at the phantom size it trains a ResNet-18).
``plain_torch`` is not installed with kmedssl: ``benchmarks/train_step.py`` of a source checkout makes it
importable (or ``PYTHONPATH=benchmarks``), and the driver passes its folder on to the workers.

Columns: median step time; images/s (every input image: 2 per frontal/lateral pair); peak memory in MiB
(CUDA: the backend's peak of allocated device memory; CPU: peak resident memory of the process minus its
resident memory before the model was built); GFLOPs per input image of the step's encoder work, forward
(every encoder/decoder pass, the EMA teacher included) and train (3 x the trained part + the teacher), from
``kmedssl.bench.phantom.step_flops``; achieved TFLOP/s = train GFLOPs/image x images/s / 1000; MFU = achieved
TFLOP/s / the device's dense peak for the step's matrix arithmetic (bf16 or fp16 for those precisions; for fp32,
TF32 where the backend multiplies float32 matrices on TF32 tensor cores, else plain fp32), from ``PEAK_TFLOPS``
or ``--peak-tflops``; n/a on a CPU or an unknown GPU without ``--peak-tflops``. FLOPs count 2 per
multiply-accumulate (``kmedssl.backbones.flops``); heads, losses, normalisations and the optimizer are not
counted. The table is printed and written as CSV after every row (a run stopped by a time limit keeps its rows).
"""

import argparse
import csv
import datetime
import importlib.util
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import time

SIZES = ("phantom", "vit-s16", "vit-b16", "vit-b16-512")  # kmedssl.bench.phantom.STEP_SIZES
BACKENDS = ("torch", "tensorflow", "jax")
JIT_MODES = ("auto", "true", "false")
PRECISIONS = ("fp32", "bf16", "fp16")  # kmedssl.training.precision.PRECISIONS
PLAIN_METHODS = ("spcl", "mvmae", "simclr")  # plain_torch.build.METHODS
RESULT_PREFIX = "TRAIN_STEP_RESULT "
WORKER_MODULE = "kmedssl.bench.train_step"  # run as `python -m WORKER_MODULE --worker SPEC`
COLUMNS = ("size", "backend", "jit_compile", "jit_resolved", "precision", "impl", "method", "encoder", "batch_size",
           "images_per_step", "first_step_s", "step_ms", "images_per_s", "peak_mib", "memory",
           "forward_gflops_per_image", "train_gflops_per_image", "achieved_gflops_per_s", "achieved_tflops_per_s",
           "matmul", "peak_tflops_per_s", "peak_source", "mfu_percent", "kmedssl_over_plain", "device", "gpu",
           "threads", "skipped", "error")


# === Peak FLOP/s of known GPUs and MFU ===

# Dense peak TFLOP/s (no structured sparsity) per kind of matrix arithmetic, from NVIDIA's product datasheets
# (H100 and H200 Tensor Core GPU, A100, L40S, L4 and A10 datasheets; figures marked "with sparsity" there are
# halved; H100 SXM's to the decimal of the Hopper architecture whitepaper): "bf16" = BF16 (= FP16) tensor cores,
# "tf32" = TF32 tensor cores (float32 inputs), "fp32" = FP32 on the CUDA cores (float32 without TF32). Matched
# against the GPU's name (torch.cuda.get_device_name(), e.g. "NVIDIA H100 80GB HBM3" for an H100 SXM), first
# match wins. docs/performance.md lists them with their sources.
PEAK_TFLOPS = (
    (r"H100.*NVL", "H100 NVL", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"H100.*PCIe", "H100 PCIe", {"bf16": 756.5, "tf32": 378.0, "fp32": 51.0}),
    (r"H100", "H100 SXM", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    (r"H200.*NVL", "H200 NVL", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"H200", "H200 SXM", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),  # also GH200's GPU
    (r"A100", "A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    (r"L40S", "L40S", {"bf16": 362.05, "tf32": 183.0, "fp32": 91.6}),
    (r"\bL4\b", "L4", {"bf16": 121.0, "tf32": 60.0, "fp32": 30.3}),
    (r"\bA10\b", "A10", {"bf16": 125.0, "tf32": 62.5, "fp32": 31.2}),
)


def known_peak(gpu_name, matmul):
    """``(TFLOP/s, "H100 SXM bf16 dense")`` for a GPU of ``PEAK_TFLOPS`` and the matrix arithmetic ``matmul``
    (``"bf16"``, ``"fp16"``, ``"tf32"`` or ``"fp32"``), or ``(None, reason)``."""
    if not gpu_name:
        return None, "no GPU"
    for pattern, name, peaks in PEAK_TFLOPS:
        if re.search(pattern, gpu_name, flags=re.IGNORECASE):
            kind = "bf16" if matmul == "fp16" else matmul
            return peaks[kind], f"{name} {matmul} dense"
    return None, f"no peak known for {gpu_name!r}"


def peak_for(row, peak_tflops=None):
    """``(TFLOP/s or None, source)`` of the row: ``peak_tflops`` (``--peak-tflops``) when given, else
    ``known_peak`` of the row's GPU and matrix arithmetic."""
    if peak_tflops is not None:
        return peak_tflops, "--peak-tflops"
    return known_peak(row.get("gpu", ""), row.get("matmul", ""))


def add_efficiency(row, peak_tflops=None):
    """Fill the row's ``achieved_tflops_per_s``, ``peak_tflops_per_s``, ``peak_source`` and ``mfu_percent``
    (MFU = achieved / peak x 100; empty where the peak is unknown)."""
    if row.get("error") or row.get("skipped"):
        return row
    achieved = row["achieved_gflops_per_s"] / 1000
    peak, source = peak_for(row, peak_tflops)
    row.update(achieved_tflops_per_s=round(achieved, 4), peak_tflops_per_s="" if peak is None else peak,
               peak_source=source, mfu_percent="" if peak is None else round(100 * achieved / peak, 2))
    return row


# === Worker: one measurement in this process ===


def describe_encoder(encoder, recipe):
    if getattr(recipe, "encoder", "vit") == "swin":
        return f"Swin {recipe.encoder_size}, {encoder.image_size} px"
    if hasattr(encoder, "patch_size"):
        return f"ViT {recipe.encoder_size}/{encoder.patch_size}, {encoder.image_size} px"
    return f"ResNet-18 w{encoder.width}, {recipe.image_size} px"


def step_batch(recipe, seed):
    """Batch 0 of the recipe's phantom training data, the inputs ``kmedssl.bench.phantom.prepare_step`` makes
    (for the plain-PyTorch worker, which builds no kmedssl model)."""
    from kmedssl.data.sources import open_source, split_records
    from kmedssl.ops.runtime import seed_everything

    seed_everything(seed)
    source = open_source("phantom", kind=recipe.data_kind, size=recipe.data_size, seed=recipe.data_seed)
    batch = recipe.training_data(source, split_records(source, seed=recipe.split_seed)["train"], seed)[0]
    return batch[0] if isinstance(batch, tuple) else batch


def timing_row(spec, recipe, images, warm, times, memory, flops, backend):
    """The measured columns shared by both kinds of worker."""
    from kmedssl.ops.device import gpu_name, matmul_arithmetic
    from kmedssl.ops.runtime import device_description

    forward, train = flops
    step = statistics.median(times)
    gpu = gpu_name(backend)
    return {
        "batch_size": recipe.batch_size, "images_per_step": images, "first_step_s": round(warm[0], 3),
        "step_ms": round(1000 * step, 2), "images_per_s": round(images / step, 2),
        "peak_mib": round(memory.peak_mib(), 1), "memory": memory.kind,
        "forward_gflops_per_image": round(forward / 1e9, 4), "train_gflops_per_image": round(train / 1e9, 4),
        "achieved_gflops_per_s": round(train / 1e9 * images / step, 2), "device": device_description(),
        "gpu": gpu, "matmul": matmul_arithmetic(backend, spec.get("precision", "fp32"), bool(gpu)),
    }


def measure(spec):
    """One measurement (``spec``: method, size, batch_size, steps, warmup, jit_compile, precision, threads,
    impl); a dict of the CSV columns. The plain-PyTorch rows come from ``plain_torch.build.measure``."""
    if spec.get("impl", "kmedssl") == "plain":
        try:
            from plain_torch import build
        except ImportError as error:
            raise SystemExit(f"Error: cannot import plain_torch ({error}); it comes with a source checkout, not "
                             "with the installed package")
        return build.measure(spec)
    backend = os.environ["KERAS_BACKEND"]
    import keras

    from kmedssl.bench.phantom import prepare_step, run_steps, step_encoder, step_flops, step_recipe
    from kmedssl.ops.device import MemoryProbe, limit_tensorflow_threads
    from kmedssl.ops.runtime import configure_threads, float16_training_error
    from kmedssl.training.precision import precision_scope

    limit_tensorflow_threads(spec["threads"])
    configure_threads(spec["threads"])
    precision = spec.get("precision", "fp32")
    if precision == "fp16" and float16_training_error():
        raise SystemExit(f"Error: {float16_training_error()}")
    jit = {"auto": "auto", "true": True, "false": False}[spec["jit_compile"]]
    recipe = step_recipe(spec["method"], spec["size"], spec["batch_size"])
    memory = MemoryProbe(keras.backend.backend())
    memory.start()
    with precision_scope(precision):  # layers compute in it, weights stay float32 (as ``pretrain``)
        model, x, y, _ = prepare_step(recipe, seed=0, encoder=step_encoder(recipe, spec["size"]), jit_compile=jit)
    warm = run_steps(model, x, y, max(spec["warmup"], 1))
    times = run_steps(model, x, y, spec["steps"])
    row = timing_row(spec, recipe, recipe.batch_size * model.images_per_sample, warm, times, memory,
                     step_flops(recipe, model), backend)
    return {**row, "encoder": describe_encoder(model.encoder, recipe), "jit_resolved": str(model.jit_compile)}


def worker_main(spec_json):
    if os.environ.get("KERAS_BACKEND") == "torch":
        try:
            import triton  # noqa: F401  (before anything imports TensorFlow, SPEC §10; torch.compile uses it)
        except ImportError:
            pass
    print(RESULT_PREFIX + json.dumps(measure(json.loads(spec_json))), flush=True)


# === Driver: one worker process per measurement ===


def plain_torch_folder():
    """The folder holding the importable ``plain_torch`` package (appended to the workers' ``PYTHONPATH``), found
    by the import system, not read from the checkout by kmedssl: the source checkout's wrapper script puts its
    own folder on ``sys.path``, or the user's ``PYTHONPATH`` names it. ``SystemExit`` with one line without it."""
    spec = importlib.util.find_spec("plain_torch")
    if spec is None or not spec.origin:
        raise SystemExit("Error: --plain-torch needs the plain_torch package, which is not installed with kmedssl: "
                         "in a source checkout, run the train_step.py script of its benchmarks folder, or put that "
                         "folder on PYTHONPATH.")
    return pathlib.Path(spec.origin).resolve().parents[1]


def run_worker(spec, backend, timeout, extra_path=None):
    """The worker's result row for ``spec`` on ``backend`` (an ``error`` column when it failed); ``extra_path``
    is appended to the worker's ``PYTHONPATH`` (the plain-PyTorch baseline's folder)."""
    env = {**os.environ, "KERAS_BACKEND": backend, "OMP_NUM_THREADS": str(spec["threads"]),
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(extra_path)]))
    row = {key: spec[key] for key in ("size", "method", "jit_compile", "threads")}
    row.update(backend=backend, precision=spec.get("precision", "fp32"), impl=spec.get("impl", "kmedssl"),
               skipped="", error="")
    command = [sys.executable, "-m", WORKER_MODULE, "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"timed out after {timeout:g} s"}
    results = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode or not results:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()] or [f"exit {done.returncode}"]
        return {**row, "error": lines[-1][:300]}
    return {**row, **json.loads(results[-1][len(RESULT_PREFIX):])}


HEADER = (f"{'size':<11} {'backend':<10} {'jit':<5} {'prec':<4} {'impl':<7} {'method':<10} {'encoder':<21} "
          f"{'batch':>5} {'first s':>8} {'step ms':>9} {'images/s':>9} {'peak MiB':>9} {'fwd GF/img':>10} "
          f"{'train GF/img':>12} {'TFLOP/s':>8} {'MFU %':>6} {'k/plain':>7}")


def _cell(value, width, fmt):
    return f"{'n/a' if value in ('', None) else format(value, fmt):>{width}}"


def format_row(r):
    prefix = (f"{r['size']:<11} {r['backend']:<10} {r['jit_compile']:<5} {r.get('precision', 'fp32'):<4} "
              f"{r.get('impl', 'kmedssl'):<7} {r['method']:<10} ")
    if r.get("skipped"):
        return prefix + f"n/a: {r['skipped']}"
    if r["error"]:
        return prefix + f"FAILED: {r['error']}"
    ratio = "" if r.get("impl") == "plain" else r.get("kmedssl_over_plain", "")
    return prefix + (f"{r['encoder']:<21} {r['batch_size']:>5} {r['first_step_s']:>8.2f} {r['step_ms']:>9.1f} "
                     f"{r['images_per_s']:>9.1f} {r['peak_mib']:>9.0f} {r['forward_gflops_per_image']:>10.3f} "
                     f"{r['train_gflops_per_image']:>12.3f} {r['achieved_gflops_per_s'] / 1000:>8.3g} "
                     f"{_cell(r.get('mfu_percent'), 6, '.1f')} "
                     + (f"{'-':>7}" if r.get("impl") == "plain" else _cell(ratio, 7, '.2f')))


def add_ratio(row, plain):
    """``kmedssl_over_plain`` = kmedssl step ms / plain step ms when both were measured."""
    ok = plain and not plain["error"] and not plain.get("skipped") and not row["error"]
    row["kmedssl_over_plain"] = round(row["step_ms"] / plain["step_ms"], 3) if ok else ""
    return row


def efficiency_notes(rows, peak_tflops=None):
    """One line per device saying which peak the MFU column divides by, or why it is n/a."""
    notes = {}
    for r in rows:
        if r["error"] or r.get("skipped"):
            continue
        device = r.get("gpu") or r.get("device", "cpu")
        peak, source = peak_for(r, peak_tflops)
        if peak is None:
            notes.setdefault(device, f"MFU n/a on {device}: {source} (pass --peak-tflops).")
        else:
            notes.setdefault((device, source), f"MFU on {device}: achieved / {peak:g} TFLOP/s ({source}).")
    return list(notes.values())


def efficiency_claims(rows):
    """Lines checking paper 003's efficiency claims per (size, backend, jit, precision) group of kmedssl rows
    with S-PCL, SimCLR and MVMAE measured: images/s S-PCL >= SimCLR >= MVMAE, and S-PCL's forward GFLOPs/image
    the lowest of the measured methods; each broken claim says by how much."""
    lines, groups = [], {}
    for r in rows:
        if not r["error"] and not r.get("skipped") and r.get("impl", "kmedssl") == "kmedssl":
            key = (r["size"], r["backend"], r["jit_compile"], r.get("precision", "fp32"))
            groups.setdefault(key, {})[r["method"]] = r
    for (size, backend, jit, precision), by_method in groups.items():
        if not {"spcl", "simclr", "mvmae"} <= set(by_method):
            continue
        speed = {m: by_method[m]["images_per_s"] for m in ("spcl", "simclr", "mvmae")}
        checks = [(a, b, speed[a] / speed[b]) for a, b in (("spcl", "simclr"), ("simclr", "mvmae"))]
        text = "; ".join(f"{a} {speed[a]:.2f} vs {b} {speed[b]:.2f} img/s: "
                         + ("holds" if ratio >= 1 else f"FAILS ({a} at {ratio:.2f}x of {b})") for a, b, ratio in checks)
        flops = {m: r["forward_gflops_per_image"] for m, r in by_method.items()}
        cheapest = min(flops, key=flops.get)
        flop_text = (f"S-PCL's {flops['spcl']:.3f} GFLOPs/image is the lowest" if cheapest == "spcl" else
                     f"S-PCL's {flops['spcl']:.3f} GFLOPs/image is NOT the lowest ({cheapest}: {flops[cheapest]:.3f}, "
                     f"{flops['spcl'] / flops[cheapest]:.2f}x)")
        lines.append(f"Paper 003 claims at {size}/{backend}/jit {jit}/{precision}: {text}. {flop_text}.")
    return lines


def split_choices(text, allowed, option):
    values = tuple(v.strip().lower() for v in text.split(",") if v.strip())
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise SystemExit(f"Error: expected {option} from {', '.join(allowed)} (comma-separated). Received: {text!r}")
    return values


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", help="Comma-separated methods (default: every method of "
                        "kmedssl.recipes.list_methods()).")
    parser.add_argument("--sizes", default="phantom,vit-s16", help=f"Comma-separated, from {', '.join(SIZES)}.")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--batch-size", type=int, help="Batch size of every method (default: the recipe's; "
                        "16 at vit-s16, 128 at vit-b16, 64 at vit-b16-512).")
    parser.add_argument("--steps", type=int, default=5, help="Timed steps per measurement.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps first (at least 1).")
    parser.add_argument("--jit-compile", default="auto", help="Comma-separated modes: auto, true, false.")
    parser.add_argument("--precision", default="fp32", help="Comma-separated recipe precisions: fp32, bf16, fp16.")
    parser.add_argument("--plain-torch", action="store_true", help="Also time the same step in plain PyTorch "
                        "(spcl, mvmae, simclr; the plain_torch package of a source checkout, importable when its "
                        "wrapper script runs this) and print kmedssl / plain.")
    parser.add_argument("--peak-tflops", type=float, help="Peak TFLOP/s that MFU divides by (default: the GPU's "
                        "dense peak for the step's arithmetic from the table of known GPUs; n/a on a CPU).")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 0) or os.cpu_count()),
                        help="Threads of torch (intra-op) and TensorFlow (intra- and inter-op); JAX keeps XLA's "
                        "own pool (default $OMP_NUM_THREADS or all cores).")
    parser.add_argument("--timeout", type=float, default=3600, help="Seconds per measurement before giving up.")
    parser.add_argument("--csv", help="CSV output (default runs/bench-train-TIME.csv).")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is None:
        if args.steps < 1 or args.warmup < 0 or args.threads < 1 or (args.batch_size or 1) < 1 or args.timeout <= 0:
            raise SystemExit("Error: expected --steps >= 1, --warmup >= 0, --threads >= 1, --batch-size >= 1 and "
                             "--timeout > 0.")
        if args.peak_tflops is not None and not args.peak_tflops > 0:
            raise SystemExit(f"Error: expected --peak-tflops > 0. Received: {args.peak_tflops:g}")
        args.sizes = split_choices(args.sizes, SIZES, "--sizes")
        args.backends = split_choices(args.backends, BACKENDS, "--backends")
        args.jit_compile = split_choices(args.jit_compile, JIT_MODES, "--jit-compile")
        args.precision = split_choices(args.precision, PRECISIONS, "--precision")
        args.plain_folder = plain_torch_folder() if args.plain_torch else None
        # The registry imports Keras: in this driver process, on a backend the workers use (installed).
        os.environ.setdefault("KERAS_BACKEND", args.backends[0])
        from kmedssl.recipes import list_methods

        methods = tuple(list_methods())
        args.methods = methods if args.methods is None else split_choices(args.methods, methods, "--methods")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker is not None:
        worker_main(args.worker)
        return
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = pathlib.Path(args.csv or f"runs/bench-train-{stamp}.csv")
    print(f"Training-step benchmark: sizes {', '.join(args.sizes)}; backends {', '.join(args.backends)}; jit "
          f"{', '.join(args.jit_compile)}; precision {', '.join(args.precision)}; "
          + ("kmedssl and plain PyTorch; " if args.plain_torch else "")
          + f"{args.steps} timed steps after {args.warmup} warm-up; {args.threads} threads; one process per row",
          flush=True)
    print(f"{HEADER}\n{'-' * len(HEADER)}", flush=True)
    rows, plain_rows, start = [], {}, time.perf_counter()

    def record(row):
        rows.append(add_efficiency(row, args.peak_tflops))
        print(format_row(row), flush=True)
        write_csv(path, rows, COLUMNS)  # after every row: a run stopped by a time limit keeps what it measured

    for size in args.sizes:
        for backend in args.backends:
            for jit in args.jit_compile:
                for precision in args.precision:
                    for method in args.methods:
                        spec = dict(method=method, size=size, batch_size=args.batch_size, steps=args.steps,
                                    warmup=args.warmup, jit_compile=jit, precision=precision, threads=args.threads,
                                    impl="kmedssl")
                        key = (size, jit, precision, method)
                        if args.plain_torch and method in PLAIN_METHODS and key not in plain_rows:
                            plain_rows[key] = run_worker({**spec, "impl": "plain"}, "torch", args.timeout,
                                                         args.plain_folder)
                            record(plain_rows[key])
                        record(add_ratio(run_worker(spec, backend, args.timeout), plain_rows.get(key)))
    for line in efficiency_notes(rows, args.peak_tflops) + efficiency_claims(rows):
        print(line)
    write_report(path, rows, COLUMNS, start)


def write_csv(path, rows, columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({key: row.get(key, "") for key in columns} for row in rows)


def write_report(path, rows, columns, start):
    """Write ``rows`` (dicts with an ``error`` key) as CSV, say so, and exit 1 if a measurement failed."""
    write_csv(path, rows, columns)
    failed = sum(bool(r["error"]) for r in rows)
    print(f"Wrote {path} ({len(rows)} rows, {failed} failed) in {time.perf_counter() - start:.0f} s.")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
