"""Fused random token partition (S-PCL, SPEC §3.4), MAE masking (SPEC §3.1) and token gather.

Both masking ops rank the tokens of a row by their noise, as a stable ascending argsort would:

    rank[j] = #{k : noise[k] < noise[j]} + #{k < j : noise[k] == noise[j]}        (position of j in argsort)

counted in O(N^2) tiles per row (N is at most a few thousand; the noise must be finite, as uniform noise is),
then every token is scattered straight to its output slot, with no sort:

- ``random_partition``: n_mask = int(N r), V = N - n_mask, split = n_mask + V // 2. Token j belongs to
  ``masked`` (rank < n_mask), ``part_1`` (n_mask <= rank < split) or ``part_2`` (rank >= split); its slot is
  the number of tokens k < j in the same part, so each part comes out sorted ascending. One program per row
  walks its token blocks in order, carrying the per-part counts (an exclusive prefix sum).
- ``mae_masking``: len_keep = int(N (1 - r)); ``ids_restore[j] = rank[j]``, ``mask[j] = rank[j] >= len_keep``
  and ``ids_keep[rank[j]] = j`` for the kept tokens (ids_keep in ascending-noise order, as MAE's
  ``argsort(noise)[:, :len_keep]``).

``gather_tokens(tokens, ids)`` is ``take_along_axis(tokens, ids[..., None], axis=1)`` with a backward that
scatter-adds (atomic float32 adds, so repeated ids accumulate).
"""

import numbers

import torch
import triton
import triton.language as tl

# === Triton kernels ===


@triton.jit
def _stable_rank(row_ptr, tokens, tokens_ok, N, BLOCK_K: tl.constexpr):
    """rank[j] = #{k : noise[k] < noise[j]} + #{k < j : noise[k] == noise[j]} for a block of tokens j."""
    noise = tl.load(row_ptr + tokens, mask=tokens_ok, other=0.0).to(tl.float32)  # (BJ,)
    rank = tl.zeros(tokens.shape, dtype=tl.int32)
    for k0 in range(0, N, BLOCK_K):
        others = k0 + tl.arange(0, BLOCK_K)
        others_ok = others < N
        other_noise = tl.load(row_ptr + others, mask=others_ok, other=0.0).to(tl.float32)  # (BK,)
        before = (other_noise[None, :] < noise[:, None]) | (
            (other_noise[None, :] == noise[:, None]) & (others[None, :] < tokens[:, None]))
        rank += tl.sum((before & others_ok[None, :]).to(tl.int32), axis=1)
    return rank


@triton.jit
def _scatter_part(out_ptr, tokens, member, carry):
    """Store each member token at ``carry + (number of earlier members in the block)``; return the new carry."""
    member = member.to(tl.int32)
    slots = carry + tl.cumsum(member, axis=0) - member
    tl.store(out_ptr + slots, tokens, mask=member != 0)
    return carry + tl.sum(member, axis=0)


# One program per row b: masked[b], part_1[b], part_2[b], each ascending.
@triton.jit
def _partition_kernel(noise_ptr, masked_ptr, part_1_ptr, part_2_ptr, N, n_mask, split,
                      BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    row_ptr = noise_ptr + b * N
    masked_row = masked_ptr + b * n_mask
    part_1_row = part_1_ptr + b * (split - n_mask)
    part_2_row = part_2_ptr + b * (N - split)
    carry_masked = tl.zeros((), dtype=tl.int32)
    carry_1 = tl.zeros((), dtype=tl.int32)
    carry_2 = tl.zeros((), dtype=tl.int32)
    for j0 in range(0, N, BLOCK_J):
        tokens = j0 + tl.arange(0, BLOCK_J)
        tokens_ok = tokens < N
        rank = _stable_rank(row_ptr, tokens, tokens_ok, N, BLOCK_K)
        carry_masked = _scatter_part(masked_row, tokens, tokens_ok & (rank < n_mask), carry_masked)
        carry_1 = _scatter_part(part_1_row, tokens, tokens_ok & (rank >= n_mask) & (rank < split), carry_1)
        carry_2 = _scatter_part(part_2_row, tokens, tokens_ok & (rank >= split), carry_2)


# One program per (block of BJ tokens, row b): ids_restore = rank, mask = rank >= len_keep, ids_keep[rank] = j.
@triton.jit
def _mae_masking_kernel(noise_ptr, ids_keep_ptr, mask_ptr, ids_restore_ptr, N, len_keep,
                        BLOCK_J: tl.constexpr, BLOCK_K: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    tokens = tl.program_id(0) * BLOCK_J + tl.arange(0, BLOCK_J)
    tokens_ok = tokens < N
    rank = _stable_rank(noise_ptr + b * N, tokens, tokens_ok, N, BLOCK_K)
    tl.store(ids_restore_ptr + b * N + tokens, rank, mask=tokens_ok)
    tl.store(mask_ptr + b * N + tokens, (rank >= len_keep).to(tl.float32), mask=tokens_ok)
    tl.store(ids_keep_ptr + b * len_keep + rank, tokens, mask=tokens_ok & (rank < len_keep))


# Gather: out[b, i, :] = tokens[b, ids[b, i], :]; one program per (output row, block of BD channels).
# Scatter-add (backward): grad_tokens[b, ids[b, i], :] += grad_out[b, i, :].
# Ids outside [0, N) read zeros and are dropped (never an out-of-bounds access).
@triton.jit
def _gather_kernel(tokens_ptr, ids_ptr, out_ptr, N, n, D, BLOCK_D: tl.constexpr, SCATTER_ADD: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # b * n + i
    chans = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    index = tl.load(ids_ptr + row + tl.zeros((BLOCK_D,), dtype=tl.int64)).to(tl.int64)  # (BD,), one id
    ok = (chans < D) & (index >= 0) & (index < N)
    source = tokens_ptr + ((row // n) * N + index) * D + chans
    if SCATTER_ADD:
        values = tl.load(out_ptr + row * D + chans, mask=chans < D, other=0.0).to(tl.float32)
        tl.atomic_add(source, values, mask=ok)
    else:
        tl.store(out_ptr + row * D + chans, tl.load(source, mask=ok, other=0.0), mask=chans < D)


# === Launchers ===

BLOCK_J = 64
BLOCK_K = 128


def _validate(noise, mask_ratio):
    """Return the token count N of ``noise (B, N)`` after checking the arguments (as ``kmedssl.ops``)."""
    if not isinstance(mask_ratio, numbers.Real) or not 0 <= mask_ratio < 1:
        raise ValueError(f"Expected mask_ratio in [0, 1). Received: mask_ratio={mask_ratio}")
    if noise.dim() != 2:
        raise ValueError(f"Expected noise of shape (B, N). Received: noise.shape={tuple(noise.shape)}")
    return noise.shape[1]


def _partition_sizes(num_tokens, mask_ratio):
    num_masked = int(num_tokens * mask_ratio)
    num_visible = num_tokens - num_masked
    if num_visible < 2:
        raise ValueError(
            "Expected at least 2 visible tokens so that both parts are non-empty. "
            f"Received: N={num_tokens}, mask_ratio={mask_ratio} (visible: {num_visible})"
        )
    return num_masked, num_masked + num_visible // 2


def _len_keep(num_tokens, mask_ratio):
    len_keep = int(num_tokens * (1 - mask_ratio))
    if len_keep < 1:
        raise ValueError(
            f"Expected at least 1 kept token. Received: N={num_tokens}, mask_ratio={mask_ratio} (kept: {len_keep})"
        )
    return len_keep


class _GatherTokens(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tokens, ids):
        tokens, ids = tokens.contiguous(), ids.contiguous()
        batch, num_tokens, dim = tokens.shape
        out = torch.empty((batch, ids.shape[1], dim), device=tokens.device, dtype=tokens.dtype)
        _launch_gather(tokens, ids, out, scatter_add=False)
        ctx.save_for_backward(ids)
        ctx.tokens_shape, ctx.tokens_dtype = tokens.shape, tokens.dtype
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (ids,) = ctx.saved_tensors
        grad_tokens = torch.zeros(ctx.tokens_shape, device=grad_out.device, dtype=torch.float32)
        _launch_gather(grad_tokens, ids, grad_out.contiguous(), scatter_add=True)
        return grad_tokens.to(ctx.tokens_dtype), None


def _launch_gather(tokens, ids, out, scatter_add):
    batch, num_tokens, dim = tokens.shape
    count = ids.shape[1]
    if batch * count == 0 or dim == 0:
        return
    block_d = min(1024, triton.next_power_of_2(dim))
    _gather_kernel[(batch * count, triton.cdiv(dim, block_d))](tokens, ids, out, num_tokens, count, dim,
                                                               BLOCK_D=block_d, SCATTER_ADD=scatter_add)


# === Public functions ===


def random_partition(noise, mask_ratio):
    """Fused ``kmedssl.ops.random_partition`` (module docstring; SPEC §3.4).

    Args:
        noise: ``(B, N)`` float noise (fp32, fp16 or bf16).
        mask_ratio: fraction masked, in [0, 1); at least 2 tokens must stay visible.

    Returns:
        ``(masked (B, n_mask), part_1 (B, V // 2), part_2 (B, V - V // 2))`` int32, each sorted ascending.
    """
    num_tokens = _validate(noise, mask_ratio)
    num_masked, split = _partition_sizes(num_tokens, mask_ratio)
    noise = noise.contiguous()
    batch = noise.shape[0]
    outputs = [torch.empty((batch, size), device=noise.device, dtype=torch.int32)
               for size in (num_masked, split - num_masked, num_tokens - split)]
    if batch:
        _partition_kernel[(batch,)](noise, *outputs, num_tokens, num_masked, split, BLOCK_J=BLOCK_J,
                                    BLOCK_K=BLOCK_K)
    return tuple(outputs)


def mae_masking(noise, mask_ratio):
    """Fused ``kmedssl.ops.mae_masking`` (module docstring; SPEC §3.1).

    Args:
        noise: ``(B, N)`` float noise (fp32, fp16 or bf16).
        mask_ratio: fraction removed, in [0, 1); at least 1 token must be kept.

    Returns:
        ``(ids_keep (B, len_keep) int32, mask (B, N) float32 with 1 = removed, ids_restore (B, N) int32)``.
    """
    num_tokens = _validate(noise, mask_ratio)
    len_keep = _len_keep(num_tokens, mask_ratio)
    noise = noise.contiguous()
    batch = noise.shape[0]
    ids_keep = torch.empty((batch, len_keep), device=noise.device, dtype=torch.int32)
    mask = torch.empty((batch, num_tokens), device=noise.device, dtype=torch.float32)
    ids_restore = torch.empty((batch, num_tokens), device=noise.device, dtype=torch.int32)
    if batch:
        _mae_masking_kernel[(triton.cdiv(num_tokens, BLOCK_J), batch)](
            noise, ids_keep, mask, ids_restore, num_tokens, len_keep, BLOCK_J=BLOCK_J, BLOCK_K=BLOCK_K)
    return ids_keep, mask, ids_restore


def gather_tokens(tokens, ids):
    """``(B, N, D), (B, n) -> (B, n, D)``: ``out[b, i] = tokens[b, ids[b, i]]``; the backward scatter-adds.

    Args:
        tokens: ``(B, N, D)`` float tokens.
        ids: ``(B, n)`` int32 or int64 token indices in [0, N) (others give zero rows, unchecked on device).
    """
    if tokens.dim() != 3 or ids.dim() != 2 or ids.shape[0] != tokens.shape[0]:
        raise ValueError("Expected tokens (B, N, D) and ids (B, n). "
                         f"Received: tokens.shape={tuple(tokens.shape)}, ids.shape={tuple(ids.shape)}")
    return _GatherTokens.apply(tokens, ids)


# === Plain-torch references ===


def random_partition_reference(noise, mask_ratio):
    """Plain-torch ``random_partition``: stable argsort, slice, sort each part."""
    num_tokens = _validate(noise, mask_ratio)
    num_masked, split = _partition_sizes(num_tokens, mask_ratio)
    ids = torch.argsort(noise, dim=-1, stable=True).to(torch.int32)
    return tuple(torch.sort(part, dim=-1).values
                 for part in (ids[:, :num_masked], ids[:, num_masked:split], ids[:, split:]))


def mae_masking_reference(noise, mask_ratio):
    """Plain-torch ``mae_masking``: MAE's argsort / argsort."""
    num_tokens = _validate(noise, mask_ratio)
    len_keep = _len_keep(num_tokens, mask_ratio)
    ids_shuffle = torch.argsort(noise, dim=-1, stable=True)
    ids_restore = torch.argsort(ids_shuffle, dim=-1, stable=True)
    mask = (ids_restore >= len_keep).to(torch.float32)
    return ids_shuffle[:, :len_keep].to(torch.int32), mask, ids_restore.to(torch.int32)


def gather_tokens_reference(tokens, ids):
    """Plain-torch ``gather_tokens`` (``torch.gather``; its autograd scatter-adds).

    The gather runs on an (at least) float32 copy, so that the backward adds the gradient rows of a repeated id
    in float32 and rounds once to the input dtype, as the kernel does; a float16/bfloat16 scatter-add on CUDA
    rounds after every add (the value is an exact copy either way)."""
    index = ids.long()[..., None].expand(-1, -1, tokens.shape[-1])
    wide = torch.promote_types(tokens.dtype, torch.float32)
    return torch.gather(tokens.to(wide), 1, index).to(tokens.dtype)
