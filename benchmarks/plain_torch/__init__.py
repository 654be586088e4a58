"""Hand-written PyTorch baselines of S-PCL and MVMAE (no Keras), for ``benchmarks/torch_overhead.py``.

The modules mirror kmedssl's architecture operation for operation (ViT with a Dense patch embedding on
channels-last patches, fixed 2-D sin-cos positions, CLS token, pre-norm blocks with a fused qkv projection
and ``F.scaled_dot_product_attention``, exact GELU, LayerNorm epsilon 1e-6; MAE's light decoder; MAE random
masking and S-PCL's partition by ``argsort`` of uniform noise, gathers of the selected patches), the same
losses (SPEC §3.1, §3.4) and the same optimizer (AdamW, epsilon 1e-7, linear warm-up then cosine decay), so
that a step of kmedssl on the torch backend and a step here do the same arithmetic. ``torch_overhead.py``
copies the kmedssl weights in and checks that both give the same encoder outputs before timing.
"""

from .methods import MVMAE, SPCL
from .train import PlainTrainer
from .vit import MAEDecoder, VisionTransformer

__all__ = ["MAEDecoder", "MVMAE", "PlainTrainer", "SPCL", "VisionTransformer"]
