"""Kernel microbenchmarks (SPEC §6): the four hot ops over a size sweep, every implementation side by side.

Ops (``--sizes`` means rows or batch, ``--dims`` the feature width):
  tsp        T-SP InfoNCE (paper 003, Eq. 2): rows 2N = size, D = dim
  supcon     Jaccard SupCon (paper 001, Eq. 3): rows VB = size (V = 2 views), D = dim, K = 16 labels
  ace        ACE matching loss (paper 004, Eqs. 3-7): batch B = size, N_t = N_s = 196 tokens (grid 14), C = dim
  partition  random token partition (paper 003 §2.2): batch B = size of --tokens tokens, mask ratio 0.6
Paths:
  naive      the keras.ops reference with the plain matrices (``block_size=0``), on the active Keras backend
  blocked    the row-blocked keras.ops path (``kmedssl.losses.blocked``; tsp and supcon only)
  triton     the fused op of ``kmedssl_kernels`` (torch backend with CUDA, or on CPU with --interpret)
Modes: forward (the loss), full (loss and every gradient), backward (derived: full - forward).
Columns: median time, peak extra memory, max abs error of value and gradients vs the naive path (vs the
blocked path where the naive one failed), time ratio vs naive, and vs the H100 roofline of the size
(max(GEMM FLOPs / 989 TFLOP/s bf16 (495 TF32), bytes / 3.35 TB/s); formulas in ``roofline``).

Run (``kmedssl bench kernels`` takes the same options; so does ``python benchmarks/kernels/bench_kernels.py``):
  # H100, one command: torch + Triton, bfloat16, 2N = 1024 ... 65536, D = 128 ... 1024 (docs/kernels.md)
  KERAS_BACKEND=torch python -m kmedssl.bench.kernels
  # CPU, small sizes, any backend
  KERAS_BACKEND=jax python -m kmedssl.bench.kernels --sizes 256,1024 --dims 64
  # Triton kernels on CPU in Triton's interpreter (tiny sizes only)
  KERAS_BACKEND=torch python -m kmedssl.bench.kernels --interpret --op tsp,supcon --sizes 64 --dims 16
  # Peak extra memory of the row-blocked path, loss + gradients at 2N = 32768, D = 256, on each backend (CPU)
  python -m kmedssl.bench.kernels --cpu-memory

The triton path needs the ``kmedssl_kernels`` package (shipped with kmedssl) and Triton; Keras, the losses
and Triton are imported only once ``main`` has prepared the process (``prepare_process``).

Memory: CUDA allocator peaks on torch and tensorflow GPUs (n/a for jax on GPU); on CPU the peak resident set
(VmHWM, reset through /proc/self/clear_refs) over the resident size before the call: approximate in a long
process (freed memory is reused), exact in --cpu-memory, which measures each backend in a fresh process.
"""

import argparse
import csv
import gc
import importlib.util
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np

MODULE = "kmedssl.bench.kernels"  # --cpu-memory runs `python -m MODULE --memory-probe ...` per backend
OPS = ("tsp", "supcon", "ace", "partition")
PATHS = ("naive", "blocked", "triton")
MODES = ("forward", "backward", "full")
# H100 SXM: dense bf16/fp16 tensor-core FLOP/s (TF32 for float32 inputs) and HBM3 bandwidth.
PEAK_FLOPS = {"bfloat16": 989e12, "float16": 989e12, "float32": 494.7e12}
PEAK_BYTES_PER_S = 3.35e12
ACE_GRID, NUM_LABELS, MASK_RATIO = 14, 16, 0.6
DEFAULTS = {  # (sizes, dims) per op: on a GPU, on CPU, in Triton's interpreter
    "gpu": {"tsp": ([1024, 4096, 8192, 16384, 32768, 65536], [128, 512, 1024]),
            "supcon": ([1024, 4096, 8192, 16384, 32768, 65536], [128, 512, 1024]),
            "ace": ([16, 64, 256], [384, 768]), "partition": ([64, 256, 1024], [0])},
    "cpu": {"tsp": ([256, 1024], [64]), "supcon": ([256, 1024], [64]), "ace": ([4, 16], [64]),
            "partition": ([16, 64], [0])},
    "interpret": {"tsp": ([64], [16]), "supcon": ([64], [16]), "ace": ([2], [16]), "partition": ([4], [0])},
}


# === Process set-up (before Keras and Triton are imported) ===


def prepare_process(interpret=False):
    """Environment of a benchmark process: Triton's interpreter when asked (before Triton is imported), the
    Keras backend (default torch), the keras.ops paths kept off the Triton dispatch (the triton path calls
    ``kmedssl_kernels`` directly), and Triton imported before anything imports TensorFlow (SPEC §10)."""
    if interpret:
        os.environ["TRITON_INTERPRET"] = "1"
    os.environ.setdefault("KERAS_BACKEND", "torch")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["KMEDSSL_KERNELS"] = "off"
    if os.environ["KERAS_BACKEND"] == "torch":
        try:
            import triton  # noqa: F401
        except ImportError:
            pass


# === Tensors ===


def to_tensors(arrays, dtype):
    """NumPy arrays -> backend tensors; floating arrays cast to ``dtype`` (0-d ones stay float32)."""
    import keras

    tensors = []
    for array in arrays:
        if np.issubdtype(array.dtype, np.floating):
            tensors.append(keras.ops.cast(keras.ops.convert_to_tensor(array), dtype if array.ndim else "float32"))
        else:
            tensors.append(keras.ops.convert_to_tensor(array))
    return tensors


def to_numpy_tree(outputs):
    """Every output tensor (value, gradients, or index arrays) as a float64 NumPy array."""
    import keras

    arrays = []
    for x in keras.tree.flatten(outputs):
        floating = "float" in keras.backend.standardize_dtype(x.dtype)
        arrays.append(np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(x, "float32") if floating else x),
                                 dtype=np.float64))
    return arrays


# === Ops: inputs, paths and roofline ===


def make_case(op, size, dim, tokens, seed=0):
    """``(arrays, argnums)``: NumPy inputs of one case and the indices that receive gradients."""
    rng = np.random.default_rng(seed)
    if op == "tsp":
        z = rng.normal(size=(2, size // 2, dim)).astype("float32")
        return [z[0], z[1], np.float32(1 / 0.07)], (0, 1, 2)
    if op == "supcon":
        labels = (rng.random((size // 2, NUM_LABELS)) < 0.2).astype("float32")
        return [rng.normal(size=(size // 2, 2, dim)).astype("float32"), labels], (0,)
    if op == "ace":
        teacher = rng.normal(size=(size, ACE_GRID**2, dim)).astype("float32")
        student = (0.3 * rng.normal(size=(size, ACE_GRID**2, dim))).astype("float32")
        paired = rng.integers(-1, ACE_GRID**2, size=(size, ACE_GRID**2)).astype("int32")
        return [teacher, student, np.float32(math.log(1 / 0.07)), paired], (0, 1, 2)
    return [rng.random((size, tokens)).astype("float32")], ()


def path_function(op, path, block_size):
    """The function of one op on one path, or None where that path does not exist."""
    import keras

    from kmedssl.losses import jaccard_supcon, tsp_infonce
    from kmedssl.losses.ace import ace_matching_loss_from_pairs
    from kmedssl.ops import random_partition

    if path == "triton":
        if keras.backend.backend() != "torch":
            return None
        import importlib

        module = {"tsp": "tsp_infonce", "supcon": "jaccard_supcon", "ace": "ace_matching", "partition": "partition"}
        kernels = importlib.import_module(f"kmedssl_kernels.{module[op]}")
        if op == "tsp":
            return lambda a, b, s: kernels.tsp_infonce(a, b, kappa=16.0, scale=s)
        if op == "supcon":
            return lambda f, y: kernels.jaccard_supcon(f, y)
        if op == "ace":
            return lambda t, s, scale, p: kernels.ace_matching_loss(t, s, scale, p, ACE_GRID)
        return lambda noise: kernels.random_partition(noise, MASK_RATIO)
    if path == "blocked" and op in ("ace", "partition"):
        return None
    block = 0 if path == "naive" else block_size
    if op == "tsp":
        return lambda a, b, s: tsp_infonce(a, b, kappa=16.0, scale=s, block_size=block)
    if op == "supcon":
        return lambda f, y: jaccard_supcon(f, y, block_size=block)
    if op == "ace":
        return lambda t, s, scale, p: ace_matching_loss_from_pairs(t, s, scale, p, ACE_GRID)
    return lambda noise: random_partition(noise, MASK_RATIO)


def roofline(op, mode, size, dim, tokens, dtype):
    """H100 roofline seconds: max(GEMM FLOPs / peak FLOP/s, bytes / HBM bandwidth).

    tsp:       forward 2 R² D (the cosine GEMM), backward 2x that (recomputed cosine + gradient GEMM);
               bytes R D per read of z, the backward reads z and writes dz.
    supcon:    as tsp with the label GEMM: forward 2 R² (D + K), backward 2 R² (D + K) + 2 R² D.
    ace:       forward 2 B N_t N_s C, backward 2x that; bytes B (N_t + N_s) C (+ pairs), twice in backward.
    partition: memory-bound: read B N noise, write B N int32 indices.
    """
    width = {"bfloat16": 2, "float16": 2, "float32": 4}[dtype]
    if op in ("tsp", "supcon"):
        extra = NUM_LABELS if op == "supcon" else 0
        flops = {"forward": 2 * size**2 * (dim + extra), "backward": 2 * size**2 * (dim + extra) + 2 * size**2 * dim}
        data = {"forward": size * dim * width, "backward": 2 * size * dim * width}
    elif op == "ace":
        tokens_both = 2 * ACE_GRID**2
        gemm = 2 * size * ACE_GRID**4 * dim
        flops = {"forward": gemm, "backward": 2 * gemm}
        data = {"forward": size * tokens_both * dim * width + size * ACE_GRID**2 * 4,
                "backward": 2 * size * tokens_both * dim * width}
    else:
        flops = {"forward": 0, "backward": 0}
        data = {"forward": size * tokens * (width + 4), "backward": 0}
    flops["full"] = flops["forward"] + flops["backward"]
    data["full"] = data["forward"] + data["backward"]
    return max(flops[mode] / PEAK_FLOPS[dtype], data[mode] / PEAK_BYTES_PER_S)


# === Measurements ===


def median_seconds(run, repeats, warmup):
    from kmedssl.ops.device import synchronize

    for _ in range(warmup):
        synchronize(run())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        synchronize(run())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_case(op, size, dim, args):
    """Rows of the table for one (op, size, dim): every path, forward / backward / full."""
    from kmedssl.ops.device import compile_step, on_gpu, peak_extra_bytes, release_memory, synchronize

    import keras

    arrays, argnums = make_case(op, size, dim, args.tokens)
    modes = [m for m in args.modes if argnums or m == "forward"]
    results, outputs = {}, {}
    for path in args.paths:
        if path == "triton" and not (on_gpu() or args.interpret):
            continue  # the fused kernels run on CUDA tensors, or on CPU tensors in Triton's interpreter
        fn = path_function(op, path, args.block_size)
        if fn is None:
            continue
        tensors = to_tensors(arrays, args.dtype)
        for mode in [m for m in modes if m != "backward"]:
            step = compile_step(fn, argnums, mode)
            try:
                seconds = median_seconds(lambda: step(*tensors), args.repeats, args.warmup)
                peak = peak_extra_bytes(lambda: synchronize(step(*tensors)))
                if mode == "full" or "full" not in modes:
                    outputs[path] = to_numpy_tree(step(*tensors))
                results[path, mode] = {"seconds": seconds, "peak": peak, "status": "ok"}
            except Exception as error:  # noqa: BLE001  (out of memory at large sizes: report and go on)
                results[path, mode] = {"seconds": None, "peak": None, "status": type(error).__name__}
                release_memory()
        if ("backward" in modes and results.get((path, "full"), {}).get("seconds") is not None
                and results.get((path, "forward"), {}).get("seconds") is not None):
            seconds = results[path, "full"]["seconds"] - results[path, "forward"]["seconds"]
            results[path, "backward"] = {"seconds": seconds if seconds > 0 else None,
                                         "peak": results[path, "full"]["peak"],
                                         "status": "ok" if seconds > 0 else "full<forward (noise)"}
    reference = next((p for p in ("naive", "blocked") if p in outputs), None)
    rows = []
    for (path, mode), result in sorted(results.items(), key=lambda item: (MODES.index(item[0][1]), item[0][0])):
        naive = results.get(("naive", mode), {}).get("seconds")
        error = None
        if reference and path in outputs:
            error = max(float(np.max(np.abs(a - b))) if a.size else 0.0
                        for a, b in zip(outputs[path], outputs[reference]))
        seconds, bound = result["seconds"], roofline(op, mode, size, dim, args.tokens, args.dtype)
        rows.append({
            "backend": keras.backend.backend(), "device": "gpu" if on_gpu() else "cpu", "op": op, "path": path,
            "mode": mode, "size": size, "dim": dim if op != "partition" else args.tokens, "dtype": args.dtype,
            "status": result["status"], "time_ms": None if seconds is None else seconds * 1e3,
            "peak_mib": None if result["peak"] is None else result["peak"] / 2**20,
            "max_err_vs_ref": error, "ref": reference,
            "x_naive": None if seconds is None or not naive else seconds / naive,
            "roofline_us": bound * 1e6, "x_roofline": None if seconds is None or not bound else seconds / bound,
        })
    return rows


def format_table(rows):
    columns = [("op", "{}"), ("path", "{}"), ("mode", "{}"), ("size", "{}"), ("dim", "{}"), ("dtype", "{}"),
               ("time_ms", "{:.3f}"), ("peak_mib", "{:.1f}"), ("max_err_vs_ref", "{:.2e}"), ("x_naive", "{:.2f}"),
               ("roofline_us", "{:.3g}"), ("x_roofline", "{:.3g}"), ("status", "{}")]
    cells = [[name for name, _ in columns]]
    for row in rows:
        cells.append(["-" if row[name] is None else fmt.format(row[name]) for name, fmt in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in cells)


# === --cpu-memory: one fresh process per backend ===


def memory_probe(op, size, dim, path, block_size):
    """Print one JSON line: the peak extra resident memory of loss + gradients on ``path`` (CPU)."""
    from kmedssl.ops.device import compile_step, peak_extra_bytes, synchronize

    import keras

    arrays, argnums = make_case(op, size, dim, tokens=0)
    tensors = to_tensors(arrays, "float32")
    fn = path_function(op, path, block_size)
    backend = keras.backend.backend()
    step = compile_step(fn, argnums, "full", dynamic_rows=True, example=tensors)
    if backend == "jax":  # compile ahead of time: the compiler's own memory is not the loss's
        step = step.lower(*tensors).compile()
    elif backend == "tensorflow":  # trace and run the one graph on a tiny batch first
        small, _ = make_case(op, 8, dim, tokens=0)
        synchronize(step(*to_tensors(small, "float32")))
    start = time.perf_counter()
    peak = peak_extra_bytes(lambda: synchronize(step(*tensors)))
    print(json.dumps({"backend": backend, "op": op, "path": path, "rows": size, "dim": dim,
                      "peak_mib": peak / 2**20, "seconds": time.perf_counter() - start,
                      "matrix_mib": size**2 * 4 / 2**20}))


def cpu_memory(args):
    root = str(pathlib.Path(__file__).resolve().parents[2])  # the folder holding the kmedssl package
    print(f"peak extra memory of loss + gradients on CPU, one fresh process per backend "
          f"(a float32 ({args.rows}, {args.rows}) matrix is {args.rows**2 * 4 / 2**20:.0f} MiB)")
    print(f"{'backend':<11} {'op':<7} {'path':<8} {'rows':>6} {'D':>5} {'peak MiB':>9} {'seconds':>8}")
    for backend in args.backends:
        for op in args.ops:
            for path in args.paths:
                if path == "triton" or path_function(op, path, args.block_size) is None:
                    continue
                env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="",
                           PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
                command = [sys.executable, "-m", MODULE, "--memory-probe", "--op", op, "--paths", path,
                           "--rows", str(args.rows), "--dims", str(args.dims[0]), "--block-size", str(args.block_size)]
                done = subprocess.run(command, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    print(f"{backend:<11} {op:<7} {path:<8} failed: {done.stderr.strip().splitlines()[-1:]}")
                    continue
                result = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{backend:<11} {op:<7} {path:<8} {result['rows']:>6} {result['dim']:>5} "
                      f"{result['peak_mib']:>9.1f} {result['seconds']:>8.1f}", flush=True)


# === Command line ===


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    split = lambda text: [v.strip() for v in text.split(",") if v.strip()]  # noqa: E731
    parser.add_argument("--op", dest="ops", type=split, default=list(OPS), help="comma-separated: " + ",".join(OPS))
    parser.add_argument("--sizes", type=lambda t: [int(v) for v in split(t)], help="rows (tsp, supcon) or batch")
    parser.add_argument("--dims", type=lambda t: [int(v) for v in split(t)], help="D (tsp, supcon) or C (ace)")
    parser.add_argument("--paths", type=split, default=list(PATHS), help="comma-separated: " + ",".join(PATHS))
    parser.add_argument("--modes", type=split, default=list(MODES), help="comma-separated: " + ",".join(MODES))
    parser.add_argument("--dtype", choices=sorted(PEAK_FLOPS), help="input dtype (default: bfloat16 on GPU)")
    parser.add_argument("--tokens", type=int, help="tokens per row of the partition (default 1024; 196 on CPU)")
    parser.add_argument("--block-size", type=int, help="tile rows (blocked; default "
                        "kmedssl.losses.blocked.DEFAULT_BLOCK_SIZE)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--interpret", action="store_true", help="Triton on CPU tensors in its interpreter")
    parser.add_argument("--csv", help="CSV output (default bench_kernels_<backend>_<device>.csv)")
    parser.add_argument("--cpu-memory", action="store_true", help="peak memory per backend (fresh processes)")
    parser.add_argument("--backends", type=split, default=["torch", "tensorflow", "jax"], help="for --cpu-memory")
    parser.add_argument("--rows", type=int, default=32768, help="rows 2N for --cpu-memory")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, allowed in (("ops", OPS), ("paths", PATHS), ("modes", MODES)):
        unknown = set(getattr(args, name)) - set(allowed)
        if unknown:
            parser.error(f"unknown {name} {sorted(unknown)}; expected some of {allowed}")
    return args


def main(argv=None):
    """The benchmark with command-line arguments ``argv`` (default: ``sys.argv[1:]``)."""
    args = parse_args(argv)
    prepare_process(interpret=args.interpret)
    import keras

    from kmedssl.ops.device import on_gpu

    from kmedssl.losses import blocked

    args.block_size = args.block_size or blocked.DEFAULT_BLOCK_SIZE
    if args.cpu_memory or args.memory_probe:
        args.dims = args.dims or [256]
        args.paths = [p for p in args.paths if p != "triton"] if args.paths != list(PATHS) else ["blocked"]
        args.ops = args.ops if args.ops != list(OPS) else ["tsp", "supcon"]
        if args.memory_probe:
            return memory_probe(args.ops[0], args.rows, args.dims[0], args.paths[0], args.block_size)
        return cpu_memory(args)
    if "triton" in args.paths and importlib.util.find_spec("triton") is None:
        if args.interpret:
            raise SystemExit("Error: --interpret runs the Triton kernels, but Triton is not installed "
                             "(pip install 'kmedssl[cuda]')")
        args.paths = [p for p in args.paths if p != "triton"]  # as on CPU without --interpret: not timed
    place = "gpu" if on_gpu() else "interpret" if args.interpret else "cpu"
    args.dtype = args.dtype or ("bfloat16" if place == "gpu" else "float32")
    args.tokens = args.tokens or (1024 if place == "gpu" else 196)
    print(f"backend={keras.backend.backend()} device={'gpu' if place == 'gpu' else 'cpu'} dtype={args.dtype} "
          f"repeats={args.repeats} (median) block_size={args.block_size}", flush=True)
    rows = []
    path = args.csv or f"bench_kernels_{keras.backend.backend()}_{'gpu' if place == 'gpu' else 'cpu'}.csv"
    for op in args.ops:
        sizes, dims = DEFAULTS[place][op]
        for size in args.sizes or sizes:
            for dim in (args.dims or dims) if op != "partition" else [0]:
                case_rows = measure_case(op, size, dim, args)
                print(format_table(case_rows) + "\n", flush=True)
                rows.extend(case_rows)
                write_csv(path, rows)  # after every case: a run stopped by a time limit keeps what it measured
    print(f"wrote {path}")


def write_csv(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["op"])
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
