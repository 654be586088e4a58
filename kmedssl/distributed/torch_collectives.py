"""torch.distributed collectives for the losses (``kmedssl.distributed.context`` dispatches here on torch).

``gather_rows`` is an autograd function: forward ``all_gather`` (replica-major concatenation), backward
``all_reduce(SUM)`` of the full upstream gradient, then this rank's slice. ``mean_over_processes``: forward and
backward are both an all-mean. Written with ``all_reduce`` (not
``reduce_scatter`` / ``all_to_all``) so that it runs on every process-group backend, gloo included.
"""

import torch
import torch.distributed as dist


class _GatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, upstream):
        summed = upstream.contiguous().clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.rows
        return summed[start : start + ctx.rows]


def gather_rows(x):
    """``(b, ...) -> (world_size * b, ...)``, rank-major; gradients summed over ranks (module docstring)."""
    return _GatherRows.apply(x)


class _MeanOverProcesses(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        summed = x.detach().clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed / dist.get_world_size()

    @staticmethod
    def backward(ctx, upstream):
        # y = mean_r x_r on every rank, and every rank's loss uses y: d(sum_s L_s)/dx_r = mean_s dL_s/dy.
        summed = upstream.contiguous().clone()
        dist.all_reduce(summed, op=dist.ReduceOp.SUM)
        return summed / dist.get_world_size()


def mean_over_processes(x):
    """The mean of ``x`` over the ranks of the default process group; its gradient is the mean of the ranks'
    upstream gradients (an all-mean is its own adjoint)."""
    return _MeanOverProcesses.apply(x)
