"""Training-step benchmark of every method, per backend: step time, images/s, peak memory and analytic GFLOPs
per image, at the phantom size and at ViT-S/16 224 px (the same as ``kmedssl bench train``).

Run:  OMP_NUM_THREADS=2 python -m kmedssl.bench.train_step [--methods spcl,mvmae] [--sizes phantom,vit-s16]
          [--backends torch,tensorflow,jax] [--batch-size 16] [--steps 5] [--warmup 2]
          [--jit-compile auto,true] [--threads 2] [--csv runs/bench-train.csv]
      (or ``kmedssl bench train``, or ``python benchmarks/train_step.py`` in a source checkout)

Every (size, backend, jit mode, method) runs in a fresh Python process (``python -m kmedssl.bench.train_step
--worker SPEC``, so an installed kmedssl needs no source checkout): the backend must be chosen before
Keras is imported, and a fresh process gives a clean peak-memory figure. There the method is built from
``kmedssl.bench.phantom.step_recipe`` (the phantom recipe, or ViT-S/16 at 224 px for every method), one
batch of real phantom views is made by the input pipeline, the model is compiled with ``jit_compile`` (auto:
Keras's default, i.e. eager torch, a tf.function graph on TensorFlow/CPU, XLA on TensorFlow/GPU, jax.jit on
JAX; true: torch.compile on torch, XLA on TensorFlow and JAX), ``warmup`` steps run (the first one, with
tracing and compilation, is reported as "first s") and ``steps`` further ``model.train_on_batch`` calls on
that batch are timed (data loading excluded).

Columns: median step time; images/s (every input image: 2 per frontal/lateral pair); peak memory in MiB
(CUDA: the backend's peak of allocated device memory; CPU: peak resident memory of the process minus its
resident memory before the model was built); GFLOPs per input image of the step's encoder work, forward
(every encoder/decoder pass, the EMA teacher included) and train (about 3 x the trained part + the
teacher), from ``kmedssl.bench.phantom.step_flops``; achieved GFLOP/s = train GFLOPs/image x images/s.
FLOPs count 2 per multiply-accumulate (``kmedssl.backbones.flops``). The table is printed and written as CSV.
"""

import argparse
import csv
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

SIZES = ("phantom", "vit-s16")
BACKENDS = ("torch", "tensorflow", "jax")
JIT_MODES = ("auto", "true", "false")
RESULT_PREFIX = "TRAIN_STEP_RESULT "
WORKER_MODULE = "kmedssl.bench.train_step"  # run as `python -m WORKER_MODULE --worker SPEC`
COLUMNS = ("size", "backend", "jit_compile", "jit_resolved", "method", "encoder", "batch_size", "images_per_step",
           "first_step_s", "step_ms", "images_per_s", "peak_mib", "memory", "forward_gflops_per_image",
           "train_gflops_per_image", "achieved_gflops_per_s", "device", "threads", "error")


# === Worker: one measurement in this process ===


class MemoryProbe:
    """Peak memory of what runs after ``start()``: the backend's peak device allocation on a GPU, else the
    peak resident set size of the process (reset through ``/proc/self/clear_refs`` where Linux allows it)
    minus the resident size at ``start()``."""

    def __init__(self, backend):
        self.backend = backend
        self.device = self._device()
        self.baseline = 0

    def _device(self):
        if self.backend == "torch":
            import torch

            return "cuda" if torch.cuda.is_available() else None
        if self.backend == "jax":
            import jax

            return jax.devices()[0] if jax.devices()[0].platform == "gpu" else None
        import tensorflow as tf

        return "GPU:0" if tf.config.list_physical_devices("GPU") else None

    @property
    def kind(self):
        return "device" if self.device is not None else "rss"

    def start(self):
        if self.device is None:
            self.baseline = _status_kib("VmRSS")
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # reset the high-water mark to the current RSS (Linux >= 4.0)
            except OSError:
                pass
        elif self.backend == "torch":
            import torch

            torch.cuda.reset_peak_memory_stats()
        elif self.backend == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.reset_memory_stats(self.device)

    def peak_mib(self):
        if self.device is None:
            return (_status_kib("VmHWM") - self.baseline) / 1024
        if self.backend == "torch":
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        if self.backend == "tensorflow":
            import tensorflow as tf

            return tf.config.experimental.get_memory_info(self.device)["peak"] / 2**20
        return self.device.memory_stats()["peak_bytes_in_use"] / 2**20  # jax: since the process started


def _status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not found in /proc/self/status")


def describe_encoder(encoder, recipe):
    if hasattr(encoder, "patch_size"):
        return f"ViT {recipe.encoder_size}/{encoder.patch_size}, {encoder.image_size} px"
    return f"ResNet-18 w{encoder.width}, {recipe.image_size} px"


def measure(spec):
    """One measurement (``spec``: method, size, batch_size, steps, warmup, jit_compile, threads); a dict
    of the CSV columns."""
    backend = os.environ["KERAS_BACKEND"]
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(spec["threads"])
    import keras

    from kmedssl.ops.runtime import configure_threads, device_description
    from kmedssl.bench.phantom import (
        prepare_step,
        run_steps,
        step_encoder,
        step_flops,
        step_recipe,
    )

    configure_threads(spec["threads"])
    jit = {"auto": "auto", "true": True, "false": False}[spec["jit_compile"]]
    recipe = step_recipe(spec["method"], spec["size"], spec["batch_size"])
    memory = MemoryProbe(keras.backend.backend())
    memory.start()
    model, x, y, _ = prepare_step(recipe, seed=0, encoder=step_encoder(recipe, spec["size"]), jit_compile=jit)
    warm = run_steps(model, x, y, max(spec["warmup"], 1))
    times = run_steps(model, x, y, spec["steps"])
    peak = memory.peak_mib()
    forward, train = step_flops(recipe, model)
    images = recipe.batch_size * model.images_per_sample
    step = statistics.median(times)
    return {
        "encoder": describe_encoder(model.encoder, recipe), "batch_size": recipe.batch_size,
        "images_per_step": images, "jit_resolved": str(model.jit_compile), "first_step_s": round(warm[0], 3),
        "step_ms": round(1000 * step, 2), "images_per_s": round(images / step, 2), "peak_mib": round(peak, 1),
        "memory": memory.kind, "forward_gflops_per_image": round(forward / 1e9, 4),
        "train_gflops_per_image": round(train / 1e9, 4),
        "achieved_gflops_per_s": round(train / 1e9 * images / step, 2), "device": device_description(),
    }


def worker_main(spec_json):
    if os.environ.get("KERAS_BACKEND") == "torch":
        try:
            import triton  # noqa: F401  (before anything imports TensorFlow, SPEC §10; torch.compile uses it)
        except ImportError:
            pass
    print(RESULT_PREFIX + json.dumps(measure(json.loads(spec_json))), flush=True)


# === Driver: one worker process per measurement ===


def run_worker(spec, backend, timeout):
    """The worker's result row for ``spec`` on ``backend`` (an ``error`` column when it failed)."""
    env = {**os.environ, "KERAS_BACKEND": backend, "OMP_NUM_THREADS": str(spec["threads"]),
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    row = {key: spec[key] for key in ("size", "method", "jit_compile", "threads")}
    row.update(backend=backend, error="")
    command = [sys.executable, "-m", WORKER_MODULE, "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"timed out after {timeout} s"}
    results = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode or not results:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()] or [f"exit {done.returncode}"]
        return {**row, "error": lines[-1][:300]}
    return {**row, **json.loads(results[-1][len(RESULT_PREFIX):])}


HEADER = (f"{'size':<8} {'backend':<10} {'jit':<5} {'method':<10} {'encoder':<24} {'batch':>5} {'first s':>8} "
          f"{'step ms':>9} {'images/s':>9} {'peak MiB':>9} {'fwd GF/img':>10} {'train GF/img':>12} {'GFLOP/s':>8}")


def format_row(r):
    prefix = f"{r['size']:<8} {r['backend']:<10} {r['jit_compile']:<5} {r['method']:<10} "
    if r["error"]:
        return prefix + f"FAILED: {r['error']}"
    return prefix + (f"{r['encoder']:<24} {r['batch_size']:>5} {r['first_step_s']:>8.2f} {r['step_ms']:>9.1f} "
                     f"{r['images_per_s']:>9.1f} {r['peak_mib']:>9.0f} {r['forward_gflops_per_image']:>10.3f} "
                     f"{r['train_gflops_per_image']:>12.3f} {r['achieved_gflops_per_s']:>8.1f}")


def efficiency_claims(rows):
    """Lines checking paper 003's efficiency claims per (size, backend, jit) group with S-PCL, SimCLR and
    MVMAE measured: images/s S-PCL >= SimCLR >= MVMAE, and S-PCL's forward GFLOPs/image the lowest of the
    measured methods; each broken claim says by how much."""
    lines, groups = [], {}
    for r in rows:
        if not r["error"]:
            groups.setdefault((r["size"], r["backend"], r["jit_compile"]), {})[r["method"]] = r
    for (size, backend, jit), by_method in groups.items():
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
        lines.append(f"Paper 003 claims at {size}/{backend}/jit {jit}: {text}. {flop_text}.")
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
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--batch-size", type=int, help="Batch size of every method (default: the recipe's; "
                        "16 at vit-s16).")
    parser.add_argument("--steps", type=int, default=5, help="Timed steps per measurement.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps first (at least 1).")
    parser.add_argument("--jit-compile", default="auto", help="Comma-separated modes: auto, true, false.")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 0) or os.cpu_count()),
                        help="Threads of torch (intra-op) and TensorFlow (intra- and inter-op); JAX keeps XLA's "
                        "own pool (default $OMP_NUM_THREADS or all cores).")
    parser.add_argument("--timeout", type=float, default=3600, help="Seconds per measurement before giving up.")
    parser.add_argument("--csv", help="CSV output (default runs/bench-train-TIME.csv).")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is None:
        if args.steps < 1 or args.warmup < 0 or args.threads < 1 or (args.batch_size or 1) < 1:
            raise SystemExit("Error: expected --steps >= 1, --warmup >= 0, --threads >= 1 and --batch-size >= 1.")
        args.sizes = split_choices(args.sizes, SIZES, "--sizes")
        args.backends = split_choices(args.backends, BACKENDS, "--backends")
        # The registry imports Keras: in this driver process, on a backend the workers use (installed).
        os.environ.setdefault("KERAS_BACKEND", args.backends[0])
        from kmedssl.recipes import list_methods

        methods = tuple(list_methods())
        args.methods = methods if args.methods is None else split_choices(args.methods, methods, "--methods")
        args.jit_compile = split_choices(args.jit_compile, JIT_MODES, "--jit-compile")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker is not None:
        worker_main(args.worker)
        return
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = pathlib.Path(args.csv or f"runs/bench-train-{stamp}.csv")
    print(f"Training-step benchmark: sizes {', '.join(args.sizes)}; backends {', '.join(args.backends)}; jit "
          f"{', '.join(args.jit_compile)}; {args.steps} timed steps after {args.warmup} warm-up; {args.threads} "
          f"threads; one process per row", flush=True)
    print(f"{HEADER}\n{'-' * len(HEADER)}", flush=True)
    rows, start = [], time.perf_counter()
    for size in args.sizes:
        for backend in args.backends:
            for jit in args.jit_compile:
                for method in args.methods:
                    spec = dict(method=method, size=size, batch_size=args.batch_size, steps=args.steps,
                                warmup=args.warmup, jit_compile=jit, threads=args.threads)
                    rows.append(run_worker(spec, backend, args.timeout))
                    print(format_row(rows[-1]), flush=True)
    for line in efficiency_claims(rows):
        print(line)
    write_report(path, rows, COLUMNS, start)


def write_report(path, rows, columns, start):
    """Write ``rows`` (dicts with an ``error`` key) as CSV, say so, and exit 1 if a measurement failed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({key: row.get(key, "") for key in columns} for row in rows)
    failed = sum(bool(r["error"]) for r in rows)
    print(f"Wrote {path} ({len(rows)} rows, {failed} failed) in {time.perf_counter() - start:.0f} s.")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
