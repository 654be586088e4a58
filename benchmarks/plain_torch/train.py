"""Plain-PyTorch training step with kmedssl's optimizer settings (``Recipe.build_optimizer``), written as fast as
plain PyTorch allows: ``torch.autocast`` for bf16/fp16, optionally ``torch.compile`` of the forward (and with it
the backward), the fused AdamW/SGD kernels on CUDA (``foreach`` on CPU), ``zero_grad(set_to_none=True)``, the
batch copied from pinned host memory without blocking, and no host synchronisation inside the step.

Schedule: the learning rate warms up linearly from 0, then decays along a cosine to 0 (Keras ``CosineDecay`` as
kmedssl uses it). Optimizers: AdamW with Keras's betas (0.9, 0.999) and epsilon 1e-7 (decoupled weight decay, as
Keras's AdamW); SGD with momentum and Keras's decoupled weight decay (``w -= lr * wd * w`` before the update).
"""

import math
import time

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def warmup_cosine(step, peak, warmup_steps, decay_steps):
    """Keras ``CosineDecay`` as kmedssl uses it: ``peak * step / warmup`` during warm-up, then
    ``peak * (1 + cos(pi * min(step - warmup, decay) / decay)) / 2``."""
    if step < warmup_steps:
        return peak * step / warmup_steps
    progress = min(step - warmup_steps, decay_steps) / decay_steps
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


class PlainTrainer:
    """Trains ``model`` (whose ``forward(**inputs)`` returns the loss) one batch at a time.

    Args:
        model: an ``nn.Module`` of ``plain_torch.methods``.
        learning_rate, weight_decay: the peak rate and the decoupled weight decay.
        total_steps, warmup_steps: the schedule (kmedssl's step benchmark: 1000 steps, warm-up
            ``min(warmup_epochs * 100, 500)``).
        device: where the model and each batch go.
        compile: wrap the model's forward in ``torch.compile`` (static shapes; the backward is compiled with it).
        optimizer: ``"adamw"`` or ``"sgd"`` (the recipe's).
        momentum: SGD's momentum.
        gradient_clip: clip the global gradient norm to this (0: off), as Keras's ``global_clipnorm``.
        precision: ``"fp32"``, ``"bf16"`` (autocast to bfloat16) or ``"fp16"`` (autocast to float16 with a
            ``GradScaler``; its overflow check synchronises once per step).
    """

    def __init__(self, model, learning_rate, weight_decay, total_steps=1000, warmup_steps=0, device="cpu",
                 compile=False, optimizer="adamw", momentum=0.9, gradient_clip=0.0, precision="fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"Expected precision in {tuple(PRECISIONS)}. Received: precision={precision!r}")
        if optimizer not in ("adamw", "sgd"):
            raise ValueError(f"Expected optimizer in ('adamw', 'sgd'). Received: optimizer={optimizer!r}")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.forward = torch.compile(self.model, dynamic=False) if compile else self.model
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        fast = {"fused": True} if self.device.type == "cuda" else {"foreach": True}
        if optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(self.parameters, lr=learning_rate, betas=(0.9, 0.999), eps=1e-7,
                                               weight_decay=weight_decay, **fast)
            self.decoupled_decay = 0.0  # inside AdamW's update
        else:
            self.optimizer = torch.optim.SGD(self.parameters, lr=learning_rate, momentum=momentum, **fast)
            self.decoupled_decay = weight_decay
        self.autocast_dtype = PRECISIONS[precision]
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self.gradient_clip = gradient_clip
        self.learning_rate = learning_rate
        self.warmup_steps = warmup_steps
        self.decay_steps = max(total_steps - warmup_steps, 1)
        self.iterations = 0

    def to_host(self, batch):
        """The model's inputs of a batch of NumPy arrays as host tensors, pinned when the device is a GPU (what a
        ``DataLoader(pin_memory=True)`` hands over)."""
        inputs = {name: torch.as_tensor(batch[name]) for name in self.model.input_names}
        return {name: x.pin_memory() for name, x in inputs.items()} if self.device.type == "cuda" else inputs

    def train_step(self, batch):
        """One optimizer step on ``batch`` (host tensors from ``to_host``, or NumPy arrays), copied to the device
        each step as Keras's ``train_on_batch`` copies its NumPy batch; returns the loss as a device tensor
        (no host synchronisation)."""
        if not all(isinstance(x, torch.Tensor) for x in batch.values()):
            batch = self.to_host(batch)
        rate = warmup_cosine(self.iterations, self.learning_rate, self.warmup_steps, self.decay_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        inputs = {name: x.to(self.device, non_blocking=True) for name, x in batch.items()}
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            loss = self.forward(**inputs)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        if self.gradient_clip:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)  # else the fused step unscales inside its kernel
            torch.nn.utils.clip_grad_norm_(self.parameters, self.gradient_clip, foreach=True)
        if self.decoupled_decay:
            with torch.no_grad():
                torch._foreach_mul_(self.parameters, 1.0 - rate * self.decoupled_decay)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.iterations += 1
        return loss.detach()

    def run_steps(self, batch, steps):
        """Seconds of each of ``steps`` consecutive ``train_step`` calls on ``batch`` (NumPy arrays, pinned once).
        Each step ends by reading its loss on the host, the one synchronisation per step that Keras's
        ``train_on_batch`` also makes, so queued device work is included."""
        batch = self.to_host(batch)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            self.train_step(batch).item()
            times.append(time.perf_counter() - start)
        return times
