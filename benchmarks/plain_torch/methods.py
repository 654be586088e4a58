"""Plain-PyTorch S-PCL, MVMAE and SimCLR: views, encoders and losses of SPEC §3.1, §3.2 and §3.4 in one
``forward`` that returns the loss (float32, whatever autocast computes the layers in).

Each class names the inputs it takes (``input_names``, the keys of kmedssl's batches) and how many input
images one sample holds (``images_per_sample``, as kmedssl's methods).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .augment import two_views
from .vit import patchify

# === Losses (float32) ===


def _paired_cross_entropy(logits):
    """InfoNCE over the 2B rows of ``logits`` (2B, 2B): row ``i``'s positive is ``(i + B) mod 2B``, every
    ``j != i`` in the denominator."""
    rows = logits.shape[0]
    logits = logits.masked_fill(torch.eye(rows, dtype=torch.bool, device=logits.device), float("-inf"))
    targets = (torch.arange(rows, device=logits.device) + rows // 2) % rows
    return F.cross_entropy(logits, targets)


def tsp_infonce(z_1, z_2, kappa, scale):
    """S-PCL's T-SP InfoNCE (paper 003 Eq. 2): logits ``scale * 0.5 (1 + c) / (1 + (1 - c) kappa)`` with ``c``
    the cosine of the rows of ``[z_1; z_2]``."""
    z = F.normalize(torch.cat([z_1, z_2]).float(), dim=-1, eps=1e-12)  # (2B, D)
    cosine = z @ z.T
    return _paired_cross_entropy(scale * 0.5 * (1.0 + cosine) / (1.0 + (1.0 - cosine) * kappa))


def nt_xent(z_1, z_2, temperature):
    """SimCLR's NT-Xent (Chen et al. 2020, Eq. 1): logits ``c / T``, ``c`` the cosine of the rows of
    ``[z_1; z_2]``."""
    z = F.normalize(torch.cat([z_1, z_2]).float(), dim=-1, eps=1e-12)  # (2B, D)
    return _paired_cross_entropy(z @ z.T / temperature)


def mae_reconstruction(target, pred, mask, norm_pix=False):
    """MAE loss: per-patch mean squared error, averaged over the removed patches of the batch (``mask`` 1)."""
    target, pred = target.float(), pred.float()
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        target = (target - mean) / (target.var(dim=-1, keepdim=True, unbiased=True) + 1e-6).sqrt()
    error = (pred - target).square().mean(dim=-1)  # (B, N)
    return (error * mask).sum() / mask.sum().clamp_min(1e-12)


def latent_alignment(tokens_f, tokens_l, mode="tokens"):
    """Paper 000 Eq. 1 (``"tokens"``: mean over the batch of the sum over tokens of the per-token MSE) or the
    authors' ``"pooled"`` form (``0.5 * mean (n(mean_t f) - n(mean_t l))^2``)."""
    tokens_f, tokens_l = tokens_f.float(), tokens_l.float()
    if mode == "tokens":
        return (tokens_f - tokens_l).square().mean(dim=-1).sum(dim=-1).mean()
    pooled_f = F.normalize(tokens_f.mean(dim=1), dim=-1, eps=1e-12)
    pooled_l = F.normalize(tokens_l.mean(dim=1), dim=-1, eps=1e-12)
    return 0.5 * (pooled_f - pooled_l).square().mean()


# === Methods ===


class SPCL(nn.Module):
    """One image -> mask ``mask_ratio`` of the patches -> two disjoint visible parts (sorted indices) ->
    [with ``crop_scale`` below 1 or ``jitter`` above 0: each part read from its own augmented copy, as kmedssl]
    -> shared ViT on each part -> T-SP InfoNCE between the two CLS tokens, with a trainable log scale clamped
    to ``scale_bounds``."""

    input_names = ("image",)
    images_per_sample = 1

    def __init__(self, encoder, mask_ratio=0.6, kappa=16.0, scale_init=1 / 0.07, scale_bounds=(1.0, 100.0),
                 crop_scale=(1.0, 1.0), jitter=0.0):
        super().__init__()
        self.encoder = encoder
        self.mask_ratio, self.kappa = mask_ratio, kappa
        self.scale_bounds = tuple(scale_bounds)
        self.crop_scale, self.jitter = tuple(crop_scale), jitter
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale_init)))

    def forward(self, image):
        batch, num = image.shape[0], self.encoder.num_patches
        ids = torch.argsort(torch.rand(batch, num, device=image.device), dim=-1)
        masked = int(num * self.mask_ratio)
        split = masked + (num - masked) // 2
        part_1 = torch.sort(ids[:, masked:split], dim=-1).values  # (B, V // 2)
        part_2 = torch.sort(ids[:, split:], dim=-1).values  # (B, V - V // 2)
        image_1 = image_2 = image
        if self.crop_scale != (1.0, 1.0) or self.jitter > 0:
            image_1, image_2 = two_views(image, image.shape[1], scale=self.crop_scale, flip=False,
                                         jitter_probability=0.8 if self.jitter > 0 else 0.0,
                                         brightness=self.jitter, contrast=self.jitter)
        z_1 = self.encoder(image_1, part_1)[:, 0]
        z_2 = self.encoder(image_2, part_2)[:, 0]
        return tsp_infonce(z_1, z_2, self.kappa, self.log_scale.exp().clamp(*self.scale_bounds))


class MVMAE(nn.Module):
    """Frontal + lateral images, MAE masking (one mask shared by both views for ``alignment="tokens"``,
    independent masks for ``"pooled"``) -> encoder on the kept patches -> decoder ->
    ``0.5 (rec_f + rec_l) + beta * align`` (paper 000 Eq. 1, constant beta)."""

    input_names = ("frontal", "lateral")
    images_per_sample = 2

    def __init__(self, encoder, decoder, mask_ratio=0.75, beta=1.0, alignment="tokens", norm_pix=False):
        super().__init__()
        if alignment not in ("tokens", "pooled"):
            raise ValueError(f"Expected alignment in ('tokens', 'pooled'). Received: alignment={alignment!r}")
        self.encoder, self.decoder = encoder, decoder
        self.mask_ratio, self.beta = mask_ratio, beta
        self.alignment, self.norm_pix = alignment, norm_pix

    def masking(self, batch, device):
        """MAE random masking: ``(ids_keep (B, n_keep), mask (B, N) with 1 = removed, ids_restore (B, N))``."""
        num = self.encoder.num_patches
        ids_shuffle = torch.argsort(torch.rand(batch, num, device=device), dim=-1)
        ids_restore = torch.argsort(ids_shuffle, dim=-1)
        kept = int(num * (1 - self.mask_ratio))
        return ids_shuffle[:, :kept], (ids_restore >= kept).float(), ids_restore

    def reconstruction(self, images, pred, mask):
        return mae_reconstruction(patchify(images, self.encoder.patch_size), pred, mask, self.norm_pix)

    def forward(self, frontal, lateral):
        keep_f, mask_f, restore_f = self.masking(frontal.shape[0], frontal.device)
        keep_l, mask_l, restore_l = ((keep_f, mask_f, restore_f) if self.alignment == "tokens"
                                     else self.masking(frontal.shape[0], frontal.device))
        tokens_f = self.encoder(frontal, keep_f)
        tokens_l = self.encoder(lateral, keep_l)
        rec_f = self.reconstruction(frontal, self.decoder(tokens_f, restore_f), mask_f)
        rec_l = self.reconstruction(lateral, self.decoder(tokens_l, restore_l), mask_l)
        return 0.5 * (rec_f + rec_l) + self.beta * latent_alignment(tokens_f, tokens_l, self.alignment)


class SimCLR(nn.Module):
    """Two augmented crops of each image (kmedssl's ``TwoCropAugmentation``) -> both through the encoder in one
    pass -> projection head ``Linear(hidden) -> ReLU -> Linear(projection)`` on the CLS token -> NT-Xent."""

    input_names = ("image",)
    images_per_sample = 1

    def __init__(self, encoder, temperature=0.1, projection_dim=128, hidden_dim=512, crop_size=None,
                 crop_scale=(0.2, 1.0)):
        super().__init__()
        self.encoder = encoder
        self.temperature, self.crop_size, self.crop_scale = temperature, crop_size, tuple(crop_scale)
        self.head = nn.Sequential(nn.Linear(encoder.dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, projection_dim))

    def forward(self, image):
        view_1, view_2 = two_views(image, self.crop_size or image.shape[1], scale=self.crop_scale)
        projections = self.head(self.encoder.features(torch.cat([view_1, view_2])))  # (2B, projection_dim)
        z_1, z_2 = projections.chunk(2)
        return nt_xent(z_1, z_2, self.temperature)
