"""Plain-PyTorch training step with kmedssl's optimizer (``Recipe.build_optimizer``): AdamW with Keras's
betas (0.9, 0.999) and epsilon 1e-7, learning rate warmed up linearly from 0, then cosine-decayed to 0."""

import math
import time

import torch


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
        learning_rate, weight_decay: AdamW's peak rate and decoupled weight decay.
        total_steps, warmup_steps: the schedule (kmedssl's step benchmark: 1000 steps, warm-up
            ``min(warmup_epochs * 100, 500)``).
        device: where the model and each batch go.
        compile: wrap the model's forward in ``torch.compile``.
    """

    def __init__(self, model, learning_rate, weight_decay, total_steps=1000, warmup_steps=0, device="cpu",
                 compile=False):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.forward = torch.compile(self.model) if compile else self.model
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=learning_rate, betas=(0.9, 0.999), eps=1e-7,
                                           weight_decay=weight_decay)
        self.learning_rate = learning_rate
        self.warmup_steps = warmup_steps
        self.decay_steps = max(total_steps - warmup_steps, 1)
        self.iterations = 0

    def train_step(self, batch):
        """One optimizer step on ``batch`` (a dict of NumPy arrays, copied to the device each step as Keras's
        ``train_on_batch`` does); returns the loss as a Python float (a host sync, as ``train_on_batch``)."""
        rate = warmup_cosine(self.iterations, self.learning_rate, self.warmup_steps, self.decay_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        inputs = {key: torch.from_numpy(value).to(self.device) for key, value in batch.items()}
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.forward(**inputs)
        loss.backward()
        self.optimizer.step()
        self.iterations += 1
        return loss.item()

    def run_steps(self, batch, steps):
        """Seconds of each of ``steps`` consecutive ``train_step(batch)`` calls."""
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            self.train_step(batch)
            times.append(time.perf_counter() - start)
        return times
