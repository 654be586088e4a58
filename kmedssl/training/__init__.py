"""Training: the fit loop, atomic checkpoints and resume, run directories, callbacks, SSL health metrics."""
