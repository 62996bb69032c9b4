"""The order in which a training run visits its dataset (resumable: a pure function of the seed and the iteration).

`InfiniteSampler` is the released code's (EDM's `torch_utils.misc.InfiniteSampler`, shuffle on, window 0.5, seeded
with the run seed, the same on every rank): a shuffled order that keeps being perturbed by random swaps within a
window behind the current position, dealt round-robin over the ranks. The paper registry's default. `EpochSampler`
draws a fresh permutation per epoch.

Both return the global batch of iteration k in the project's layout: virtual GPU v (of batch / batch_gpu) takes
positions v * batch_gpu .. (v + 1) * batch_gpu - 1.
"""

from __future__ import annotations

import numpy as np
import torch

from d2o.distributed import seeded


class EpochSampler:
    """Indices of the global batch for iteration k: a fresh permutation per epoch seeded by (seed, epoch)."""

    def __init__(self, n: int, seed: int, replicas: int = 1):
        self.n, self.seed, self._epoch, self._perm = n, seed, -1, None

    def batch(self, k: int, batch: int) -> torch.Tensor:
        out = []
        for pos in range(k * batch, (k + 1) * batch):
            epoch, j = divmod(pos, self.n)
            if epoch != self._epoch:
                self._epoch, self._perm = epoch, torch.randperm(self.n, generator=seeded(self.seed, 1, epoch))
            out.append(self._perm[j])
        return torch.stack(out)


class InfiniteSampler:
    """EDM's InfiniteSampler over `replicas` ranks (the run's virtual GPUs), as the released code draws it.

    Global step p = 0, 1, ...: the item order[p % n] goes to rank p % replicas, then order[p % n] is swapped with
    order[(p % n - r) % n], r = rnd.randint(window) (numpy RandomState(seed) after shuffling order = arange(n);
    window = rint(0.5 n); no swaps for a window below 2). Rank v's m-th sample of iteration k is the item of step (k * batch_gpu + m) * replicas + v.
    The sequence is replayed from step 0 when an earlier iteration is asked for (a resume: a few seconds per 10 M
    steps)."""

    def __init__(self, n: int, seed: int, replicas: int = 1, window_size: float = 0.5):
        self.n, self.seed, self.replicas = n, seed, replicas
        self.window = int(np.rint(n * window_size))
        self._reset()

    def _reset(self) -> None:
        self._rnd = np.random.RandomState(self.seed)
        self._order = np.arange(self.n)
        self._rnd.shuffle(self._order)
        self._p = 0

    def _take(self, count: int) -> np.ndarray:
        """Items of the next `count` steps (applying their swaps)."""
        out = np.empty(count, dtype=np.int64)
        order, n = self._order, self.n
        swap = self.window >= 2  # EDM swaps only for windows of two or more
        draws = self._rnd.randint(self.window, size=count) if swap else None
        for q in range(count):
            i = (self._p + q) % n
            out[q] = order[i]
            if swap:
                j = (i - draws[q]) % n
                order[i], order[j] = order[j], order[i]
        self._p += count
        return out

    def batch(self, k: int, batch: int) -> torch.Tensor:
        start = k * batch
        if start < self._p:
            self._reset()
        while self._p < start:  # replay in chunks (the swaps are sequential)
            self._take(min(start - self._p, 1 << 20))
        items = self._take(batch)  # step index within the iteration = m * replicas + v
        bg = batch // self.replicas
        return torch.from_numpy(items.reshape(bg, self.replicas).T.reshape(-1).copy())
