"""Plain-PyTorch ViT encoder and MAE decoder with kmedssl's layout (``kmedssl.backbones``), channels-last.

Written for speed as a PyTorch user would: one fused qkv projection, ``F.scaled_dot_product_attention``
(flash or memory-efficient attention on a GPU; the math path on a CPU), only the selected patches gathered
before they are normalised and embedded, no host synchronisation. Mixed precision comes from
``torch.autocast`` around the step (``plain_torch.train``): matrix products in bfloat16/float16, LayerNorm
and the residual stream in float32.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def patchify(images, patch_size):
    """``(B, H, W, C) -> (B, N, p * p * C)``: row-major patches, each flattened as ``(p, p, C)``."""
    batch, height, width, channels = images.shape
    rows, cols = height // patch_size, width // patch_size
    x = images.reshape(batch, rows, patch_size, cols, patch_size, channels).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, rows * cols, patch_size * patch_size * channels)


def sincos_positions(grid_size, dim):
    """``(grid_size**2, dim)`` fixed 2-D sin-cos positions: ``[enc(column), enc(row)]`` (MAE's layout)."""
    quarter = dim // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.divmod(np.arange(grid_size * grid_size, dtype=np.float64), grid_size)

    def encode(coords):
        angles = coords[:, None] * omega[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return torch.from_numpy(np.concatenate([encode(cols), encode(rows)], axis=1).astype(np.float32))


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection: ``(B, T, D) -> (B, T, D)``."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, T, D / H)
        attended = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, D / H)
        return self.proj(attended.transpose(1, 2).reshape(batch, length, dim))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN(x))``, then ``x + fc2(GELU(fc1(LN(x))))``."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, eps=1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.fc2 = nn.Linear(int(dim * mlp_ratio), dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class VisionTransformer(nn.Module):
    """ViT that encodes the selected patches: ``(B, H, W, C)``, ``(B, n)`` indices -> ``(B, 1 + n, D)``."""

    def __init__(self, image_size, patch_size, channels, dim, depth, num_heads, mlp_ratio=4.0, eps=1e-6,
                 input_mean=0.5, input_std=0.25):
        super().__init__()
        self.patch_size, self.dim = patch_size, dim
        self.input_mean, self.input_std = input_mean, input_std
        grid = image_size // patch_size
        self.num_patches = grid * grid
        self.patch_embedding = nn.Linear(patch_size * patch_size * channels, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.register_buffer("position_embedding", sincos_positions(grid, dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, images, token_indices=None):
        patches = patchify(images, self.patch_size)  # (B, N, P)
        positions = self.position_embedding  # (N, D)
        if token_indices is not None:
            index = token_indices.unsqueeze(-1).expand(-1, -1, patches.shape[-1])
            patches = torch.gather(patches, 1, index)  # (B, n, P): only the selected patches are normalised
            positions = positions[token_indices]  # (B, n, D)
        x = self.patch_embedding((patches - self.input_mean) / self.input_std) + positions
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def features(self, images):
        """``(B, D)`` CLS token of all patches (kmedssl's ``VisionTransformer.features``)."""
        return self(images)[:, 0]


class MAEDecoder(nn.Module):
    """MAE decoder: ``(B, 1 + n_keep, E)`` tokens and ``(B, N)`` ``ids_restore`` -> ``(B, N, P)`` pixels."""

    def __init__(self, num_patches, patch_dim, encoder_dim, dim, depth, num_heads, mlp_ratio=4.0, eps=1e-6):
        super().__init__()
        self.num_patches = num_patches
        self.embedding = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.register_buffer("position_embedding", sincos_positions(int(num_patches**0.5), dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.prediction = nn.Linear(dim, patch_dim)

    def forward(self, tokens, ids_restore):
        x = self.embedding(tokens)  # (B, 1 + n_keep, d)
        batch, kept = x.shape[0], x.shape[1] - 1
        masks = self.mask_token.expand(batch, self.num_patches - kept, -1)
        shuffled = torch.cat([x[:, 1:], masks], dim=1)  # (B, N, d) in ids_shuffle order
        index = ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        patch_tokens = torch.gather(shuffled, 1, index) + self.position_embedding  # row-major
        x = torch.cat([x[:, :1], patch_tokens], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.prediction(self.norm(x))[:, 1:]
