"""What the training loop does differently when it runs as one rank of a torch.distributed job.

One loop (trainer.train) serves both cases: with the default ``Parallel()`` every call is
the identity; under torchrun, :meth:`Parallel.from_env` wraps the student in
DistributedDataParallel (gradients averaged across ranks), gives each rank its share of
every global batch, averages the reported losses and lets rank 0 decide early stopping.

Why share the batches instead of DistributedSampler's own shuffle: DistributedSampler
draws a new permutation from seed + epoch, so N processes would see other batches than
one process with the same seed. Splitting the one-process batches (``idx[rank::world]``)
keeps the global batches identical; only BatchNorm statistics differ (each rank
normalises its half batch: SyncBatchNorm exists for CUDA only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass
class Parallel:
    rank: int = 0
    world: int = 1
    distributed: bool = False

    @classmethod
    def from_env(cls) -> Parallel:
        """The rank and world of an initialised process group (torchrun's environment)."""
        import torch.distributed as dist

        return cls(rank=dist.get_rank(), world=dist.get_world_size(), distributed=True)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, module: torch.nn.Module, device: str) -> Any:
        """The module to train: DDP (gradient all-reduce, buffers from rank 0) when distributed."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [int(device.split(":")[1])] if device.startswith("cuda:") else None
        return DistributedDataParallel(module, device_ids=ids)

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch."""
        return idx[self.rank::self.world] if self.world > 1 else idx

    def min_batch(self) -> int:
        """Rows a global batch needs so every rank gets at least 2 (BatchNorm cannot train on one row)."""
        return 2 * self.world

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The average over ranks (each rank's value is its mean over its rows)."""
        if not self.distributed or self.world == 1:
            return values
        import torch.distributed as dist

        out = values.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.world

    def agree(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank (early stopping must stop all of them at the same epoch)."""
        if not self.distributed or self.world == 1:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], dtype=torch.int64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.broadcast(t, src=0)
        return bool(int(t.item()))
