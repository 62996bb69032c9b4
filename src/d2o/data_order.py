"""The order in which a training run visits its dataset (resumable: a pure function of the seed and the iteration)."""

from __future__ import annotations

import torch

from d2o.distributed import seeded


class EpochSampler:
    """Indices of the global batch for iteration k: a fresh permutation per epoch seeded by (seed, epoch)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self._epoch, self._perm = n, seed, -1, None

    def batch(self, k: int, batch: int) -> torch.Tensor:
        out = []
        for pos in range(k * batch, (k + 1) * batch):
            epoch, j = divmod(pos, self.n)
            if epoch != self._epoch:
                self._epoch, self._perm = epoch, torch.randperm(self.n, generator=seeded(self.seed, 1, epoch))
            out.append(self._perm[j])
        return torch.stack(out)
