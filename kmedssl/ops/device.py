"""What the benchmarks ask of the device, per backend (SPEC §1: backend-specific code lives in kmedssl/ops):
whether there is a GPU and its name, synchronisation, a compiled loss-and-gradient step, peak memory, and the
arithmetic of float32 matrix products. ``kmedssl.bench`` (kernels, train_step) uses these; the library's
training code does not.
"""

import gc

import keras


def on_gpu():
    """Whether the Keras backend runs on a GPU."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    if backend == "jax":
        import jax

        return jax.default_backend() == "gpu"
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def limit_tensorflow_threads(num_threads):
    """TensorFlow's intra- and inter-op thread pools, in a fresh process before any TensorFlow op runs (a
    benchmark worker); no-op on the other backends."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(num_threads)
        tf.config.threading.set_inter_op_parallelism_threads(num_threads)


def synchronize(outputs):
    """Wait until the device has computed ``outputs`` (returned), so that a timer around it is honest."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    elif backend == "jax":
        import jax

        jax.block_until_ready(outputs)
    elif on_gpu():
        import tensorflow as tf

        tf.test.experimental.sync_devices()
    return outputs


def compile_step(fn, argnums, mode, dynamic_rows=False, example=None):
    """``step(*tensors)``: the loss (``forward``) or the loss and its gradients w.r.t. ``argnums`` (``full``),
    compiled as in a train step (jax.jit, tf.function; eager on torch)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn if mode == "forward" else jax.value_and_grad(fn, argnums=argnums))
    if backend == "tensorflow":
        import tensorflow as tf

        signature = None
        if dynamic_rows:  # one graph for every row count (the rows are unknown while tracing, as in fit)
            signature = [tf.TensorSpec((None,) + tuple(x.shape[1:]) if len(x.shape) else (), x.dtype) for x in example]

        def full(*args):
            with tf.GradientTape() as tape:
                tape.watch([args[i] for i in argnums])
                value = fn(*args)
            return value, tape.gradient(value, [args[i] for i in argnums])

        return tf.function(fn if mode == "forward" else full, input_signature=signature)
    import torch

    def torch_full(*args):
        leaves = [x.detach().requires_grad_() if i in argnums else x for i, x in enumerate(args)]
        value = fn(*leaves)
        return value, torch.autograd.grad(value, [leaves[i] for i in argnums])

    def torch_forward(*args):  # inputs that require grad, as in a train step (autograd saves what it needs)
        return fn(*[x.detach().requires_grad_() if i in argnums else x for i, x in enumerate(args)])

    return torch_forward if mode == "forward" else torch_full


def release_memory():
    """Return cached device memory after a failed (out-of-memory) case."""
    gc.collect()
    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def status_kib(field):
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def peak_extra_bytes(run):
    """Peak memory above the level before ``run()`` (None where it cannot be measured: jax on a GPU)."""
    backend, gpu = keras.backend.backend(), on_gpu()
    if gpu and backend == "torch":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run()
        return torch.cuda.max_memory_allocated() - base
    if gpu and backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.reset_memory_stats("GPU:0")
        base = tf.config.experimental.get_memory_info("GPU:0")["current"]
        run()
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] - base
    if gpu:
        return None
    gc.collect()
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # reset VmHWM to the current resident size
    base = status_kib("VmRSS")
    run()
    return max(status_kib("VmHWM") - base, 0) * 1024



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
            self.baseline = status_kib("VmRSS")
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
            return (status_kib("VmHWM") - self.baseline) / 1024
        if self.backend == "torch":
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        if self.backend == "tensorflow":
            import tensorflow as tf

            return tf.config.experimental.get_memory_info(self.device)["peak"] / 2**20
        return self.device.memory_stats()["peak_bytes_in_use"] / 2**20  # jax: since the process started


def gpu_name(backend):
    """The name of the backend's first GPU (e.g. ``"NVIDIA H100 80GB HBM3"``), or ``""`` without one."""
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return device.device_kind if device.platform == "gpu" else ""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else ""


def matmul_arithmetic(backend, precision, on_gpu):
    """The arithmetic of the step's matrix products: ``precision``'s for bf16/fp16; for fp32 ``"tf32"`` where
    the backend multiplies float32 matrices on TF32 tensor cores (torch: ``allow_tf32``, off by default;
    TensorFlow and JAX: on by default on a GPU), else ``"fp32"``."""
    if precision != "fp32":
        return precision
    if not on_gpu:
        return "fp32"
    if backend == "torch":
        import torch

        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"
    if backend == "jax":
        import jax

        exact = jax.config.jax_default_matmul_precision in ("highest", "float32")
        return "fp32" if exact else "tf32"
    import tensorflow as tf

    return "tf32" if tf.config.experimental.is_tensor_float_32_execution_enabled() else "fp32"
