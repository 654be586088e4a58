"""Triton fused ops of kmedssl (SPEC §6). Depends on torch and triton, never on keras.

One module per op, each holding the Triton kernels (the math as a comment above each), the host launcher,
a ``torch.autograd.Function``, the public function and a plain-torch ``*_reference`` of the same signature.
``kmedssl.ops.kernels`` decides when they run. Modules are imported on demand.
"""
