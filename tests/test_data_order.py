"""Data order: EDM's InfiniteSampler as the released code draws it, dealt over virtual GPUs, resumable."""
import numpy as np
import torch

from d2o.data_order import EpochSampler, InfiniteSampler


def reference_steps(n, steps, seed, window_size=0.5):
    """The items of EDM's InfiniteSampler (shuffle on) at global steps 0..steps-1, from its definition (spec §5):
    a RandomState(seed) shuffle of 0..n-1, then after each step p the item at p mod n trades places with the one
    randint(window) places before it (window = rint(window_size n), no trades below 2)."""
    rnd = np.random.RandomState(seed)
    order = list(range(n))
    rnd.shuffle(order)
    window = int(np.rint(n * window_size))
    items = []
    for p in range(steps):
        here = p % n
        items.append(order[here])
        if window >= 2:
            there = (here - rnd.randint(window)) % n
            order[here], order[there] = order[there], order[here]
    return items


def test_infinite_sampler_deals_edms_sequence_to_each_virtual_gpu():
    n, replicas, bg, seed = 37, 4, 3, 42
    s = InfiniteSampler(n, seed, replicas=replicas)
    batches = [s.batch(k, replicas * bg) for k in range(30)]              # 30 iterations: several passes over n
    steps = reference_steps(n, 30 * replicas * bg, seed)
    for v in range(replicas):                                                # rank v gets the steps p = v mod replicas
        ours = torch.cat([b[v * bg:(v + 1) * bg] for b in batches]).tolist()
        assert ours == steps[v::replicas]
    again = InfiniteSampler(n, seed, replicas=replicas)                      # a resumed run replays to iteration 17
    assert torch.equal(again.batch(17, replicas * bg), batches[17]) and torch.equal(again.batch(3, 12), batches[3])


def test_epoch_sampler_is_a_permutation_per_epoch():
    s = EpochSampler(10, 0)
    first = torch.cat([s.batch(k, 5) for k in range(2)])
    assert sorted(first.tolist()) == list(range(10))
