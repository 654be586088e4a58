"""Data-parallel step benchmark (issue 7, docs/distributed.md): the median training-step time of each contrastive
method on 1 and on 2 devices, per backend, at the phantom recipe size. On a CPU machine the "devices" share
the same cores, so the figure tracks the engines' overhead (collectives, replica programs); it is not a
speed-up target.

Run:  python benchmarks/distributed_step.py [--backends torch,tensorflow,jax] [--methods mvcon,simclr,spcl,mulsupcon]
          [--steps 5] [--warmup 2] [--threads 2] [--csv runs/bench-distributed.csv]

Every (backend, method, devices) measurement runs in a fresh process, started the way a user starts
``kmedssl pretrain --devices N`` on that backend:

- jax: one process; 2 devices are 2 XLA host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``)
  under ``keras.distribution.DataParallel``;
- tensorflow: one process; 2 devices are 2 logical CPU devices (split by ``data_parallel`` before TensorFlow's
  runtime starts) under ``MirroredStrategy``;
- torch: 2 devices are 2 processes under ``python -m torch.distributed.run --standalone --nproc_per_node 2``
  (DDP over gloo), each feeding its half of the global batch (``DataParallelEngine.shard``).

Both the 1-device and the 2-device run of a backend get the same ``--threads`` CPU threads in all (default
all cores): torch's intra-op threads (``OMP_NUM_THREADS``) are ``threads`` in the 1-device process and
``threads / 2`` in each of the 2 processes; TensorFlow's intra- and inter-op pools are ``threads`` in both (the
2 logical devices share them); JAX keeps XLA's own pool, sized to the machine, in both. OpenMP threads wait
passively (``OMP_WAIT_POLICY=PASSIVE`` unless set): on a machine shared with other work, spinning threads that
wait for a busy core made the 2-thread torch baseline 3-4x slower than its 1-thread step.

In the process, the engine is ``kmedssl.distributed.strategy.data_parallel(devices)`` (none on 1 device); inside
its scope the method is built from ``kmedssl.bench.phantom.step_recipe`` (the phantom recipe; its
``batch_size`` is the global batch) and compiled with one real batch of phantom views
(``prepare_step``), the engine prepares the model (torch: DDP), and ``model.fit`` runs ``warmup + steps``
steps on that batch (as ``pretrain`` trains: ``fit``, the global batch split over the replicas). A step's time
runs from Keras's ``on_train_batch_begin`` to ``on_train_batch_end`` once its loss is on the host; the median
of the ``steps`` after the ``warmup`` ones is reported. Columns: global batch, ms/step on 1 and on 2 devices,
speed-up = 1-device ms / 2-device ms; the CSV adds the first step's seconds (tracing and compilation included)
and the 2-device engine.
"""

import argparse
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

from kmedssl.bench.train_step import split_choices, write_report

METHODS = ("mvcon", "simclr", "spcl", "mulsupcon")
BACKENDS = ("torch", "tensorflow", "jax")
DEVICES = (1, 2)
RESULT_PREFIX = "DISTRIBUTED_STEP_RESULT "
COLUMNS = ("backend", "method", "encoder", "global_batch", "step_ms_1", "step_ms_2", "speedup", "first_step_s_1",
           "first_step_s_2", "engine_2", "threads", "error")


# === Worker: one measurement in this process (or in each torchrun process) ===


def measure(spec):
    """Step times of ``spec`` (method, devices, steps, warmup, threads) on this process's backend: a dict of the
    worker's results."""
    backend = os.environ["KERAS_BACKEND"]
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(spec["threads"])
    import keras

    from kmedssl.distributed.strategy import data_parallel
    from kmedssl.ops.runtime import configure_threads, device_description
    from kmedssl.bench.phantom import encoder_name, prepare_step, step_recipe

    OneBatch, StepTimer = _keras_classes()
    configure_threads()  # torch: $OMP_NUM_THREADS intra-op threads (set by the driver)
    engine = data_parallel(spec["devices"])  # None on 1 device
    recipe = step_recipe(spec["method"], "phantom")
    if engine is not None:
        engine.check_batch_size(recipe.batch_size)
    timer = StepTimer()
    with engine.scope() if engine is not None else keras.name_scope("single"):
        model, x, y, _ = prepare_step(recipe, seed=0)
        model(x, training=False)  # every variable exists before DDP registers the parameters
        batches = OneBatch(x, y, spec["warmup"] + spec["steps"])
        if engine is not None:
            engine.prepare(model)
            batches = engine.shard(batches)
        model.fit(batches, epochs=1, verbose=0, callbacks=[timer])
    return {
        "encoder": encoder_name(recipe), "global_batch": recipe.batch_size,
        "first_step_s": round(timer.times[0], 3),
        "step_ms": round(1000 * statistics.median(timer.times[spec["warmup"]:]), 2),
        "engine": engine.description if engine is not None else f"1 device ({device_description()})",
        "is_main": engine is None or engine.is_main,
    }


def _keras_classes():
    """``(OneBatch, StepTimer)``: Keras subclasses, defined in the worker (the driver never imports Keras)."""
    import keras

    class OneBatch(keras.utils.PyDataset):
        """``length`` copies of one batch, shaped as the recipe's dataset gives it (``x`` or ``(x, y)``)."""

        def __init__(self, x, y, length):
            super().__init__()
            self.batch = x if y is None else (x, y)
            self.length = length

        def __len__(self):
            return self.length

        def __getitem__(self, index):
            return self.batch

    class StepTimer(keras.callbacks.Callback):
        """Seconds of each train step, ``on_train_batch_begin`` to ``on_train_batch_end`` with the loss on the host
        (JAX dispatches asynchronously)."""

        def __init__(self):
            super().__init__()
            self.times = []
            self.start = None

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])
            self.times.append(time.perf_counter() - self.start)

    return OneBatch, StepTimer


def worker_main(spec_json):
    result = measure(json.loads(spec_json))
    if result.pop("is_main"):
        print(RESULT_PREFIX + json.dumps(result), flush=True)


# === Driver: one worker process (torch: one torchrun launch) per measurement ===


def worker_command(spec, backend):
    """``(argv, env)`` of the measurement ``spec`` on ``backend`` (module docstring: devices and threads)."""
    script = [str(pathlib.Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = {**os.environ, "KERAS_BACKEND": backend, "OMP_NUM_THREADS": str(spec["threads"]),
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
           "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    devices = spec["devices"]
    if devices == 1:
        return [sys.executable, *script], env
    if backend == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    elif backend == "torch":
        env["OMP_NUM_THREADS"] = str(max(1, spec["threads"] // devices))
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(devices)]
        return launcher + script, env
    return [sys.executable, *script], env


def run_worker(spec, backend, timeout):
    """The worker's result for ``spec`` on ``backend``, or ``{"error": ...}``."""
    command, env = worker_command(spec, backend)
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{spec['devices']} device(s): timed out after {timeout} s"}
    results = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode or not results:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()] or [f"exit {done.returncode}"]
        return {"error": f"{spec['devices']} device(s): {lines[-1][:300]}"}
    return json.loads(results[-1][len(RESULT_PREFIX):])


def measure_row(backend, method, args):
    """One table row: ``method`` on ``backend`` on 1 and on 2 devices."""
    row = {"backend": backend, "method": method, "threads": args.threads, "error": ""}
    for devices in DEVICES:
        spec = dict(method=method, devices=devices, steps=args.steps, warmup=args.warmup, threads=args.threads)
        result = run_worker(spec, backend, args.timeout)
        if "error" in result:
            return {**row, "error": result["error"]}
        row.update(encoder=result["encoder"], global_batch=result["global_batch"])
        row[f"step_ms_{devices}"] = result["step_ms"]
        row[f"first_step_s_{devices}"] = result["first_step_s"]
    row["engine_2"] = result["engine"]
    row["speedup"] = round(row["step_ms_1"] / row["step_ms_2"], 3)
    return row


HEADER = (f"{'backend':<10} {'method':<10} {'encoder':<22} {'global batch':>12} {'1-device ms':>11} "
          f"{'2-device ms':>11} {'speed-up':>8}")


def format_row(r):
    prefix = f"{r['backend']:<10} {r['method']:<10} "
    if r["error"]:
        return prefix + f"FAILED: {r['error']}"
    return prefix + (f"{r['encoder']:<22} {r['global_batch']:>12} {r['step_ms_1']:>11.1f} {r['step_ms_2']:>11.1f} "
                     f"{r['speedup']:>8.2f}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--steps", type=int, default=5, help="Timed steps per measurement.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps first (at least 1).")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="CPU threads of each measurement in all, split over torch's processes (default: all "
                        "cores).")
    parser.add_argument("--timeout", type=float, default=900, help="Seconds per measurement before giving up.")
    parser.add_argument("--csv", help="CSV output (default runs/bench-distributed-TIME.csv).")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is None:
        if args.steps < 1 or args.warmup < 1 or args.threads < 1:
            raise SystemExit("Error: expected --steps >= 1, --warmup >= 1 and --threads >= 1. Received: "
                             f"{args.steps}, {args.warmup}, {args.threads}")
        args.methods = split_choices(args.methods, METHODS, "--methods")
        args.backends = split_choices(args.backends, BACKENDS, "--backends")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker is not None:
        worker_main(args.worker)
        return
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = pathlib.Path(args.csv or f"runs/bench-distributed-{stamp}.csv")
    print(f"Data-parallel step benchmark (phantom size): backends {', '.join(args.backends)}; 1 vs 2 devices; "
          f"{args.steps} timed steps after {args.warmup} warm-up; {args.threads} threads per measurement; one "
          f"process (torch: one torchrun launch) per measurement", flush=True)
    print(f"{HEADER}\n{'-' * len(HEADER)}", flush=True)
    rows, start = [], time.perf_counter()
    for backend in args.backends:
        for method in args.methods:
            rows.append(measure_row(backend, method, args))
            print(format_row(rows[-1]), flush=True)
    write_report(path, rows, COLUMNS, start)


if __name__ == "__main__":
    main()
