"""Hand-written PyTorch baselines of S-PCL, MVMAE and SimCLR (no Keras), for ``kmedssl bench train --plain-torch``
and ``benchmarks/torch_overhead.py``.

The modules mirror kmedssl's architecture operation for operation (ViT with a Dense patch embedding on
channels-last patches, fixed 2-D sin-cos positions, CLS token, pre-norm blocks with a fused qkv projection
and ``F.scaled_dot_product_attention``, exact GELU, LayerNorm epsilon 1e-6; MAE's light decoder; MAE random
masking and S-PCL's partition by ``argsort`` of uniform noise, gathers of the selected patches; SimCLR's
two-crop augmentation and projection head), the same losses (SPEC §3.1, §3.2, §3.4) and the same optimizer
settings (AdamW, epsilon 1e-7, or SGD with decoupled weight decay; linear warm-up then cosine decay), so that a
step of kmedssl on the torch backend and a step here do the same arithmetic. The step is the fastest plain
PyTorch we can write (``train``: autocast, ``torch.compile``, fused optimizers, no host syncs).

``build`` makes the counterpart of a kmedssl recipe (the only module that imports kmedssl). The package is not
installed with kmedssl: ``kmedssl bench train --plain-torch`` finds it in the ``benchmarks/`` folder of a
source checkout. ``torch_overhead.py`` copies kmedssl's weights in and checks that both give the same encoder
outputs before timing; ``tests/bench/test_train_step.py`` checks the losses against kmedssl's.
"""

from .methods import MVMAE, SPCL, SimCLR
from .train import PlainTrainer
from .vit import MAEDecoder, VisionTransformer

__all__ = ["MAEDecoder", "MVMAE", "PlainTrainer", "SPCL", "SimCLR", "VisionTransformer"]
