"""An exponential moving average of a network's weights, the copy diffusion and score models sample with.

Ho et al. 2020 (after Song & Ermon 2020, arXiv:2006.09011) sample with θ̄ ← d·θ̄ + (1 − d)·θ after every
optimizer step (d = 0.9999 over 800k steps): the average smooths the last steps' noise out of the weights.
Short runs want a shorter memory, so the decay is warmed up as min(d, (1 + n) / (10 + n)) after n updates
(the warm-up TensorFlow's ExponentialMovingAverage calls `num_updates`), which lets the average follow the
fast early changes instead of keeping the random initialization for thousands of steps.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """`ema.update(net)` after each step; `ema.net` is the averaged copy (saved with its owner's weights)."""

    def __init__(self, net: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.net = copy.deepcopy(net).requires_grad_(False).eval()
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        self.updates += 1
        n = self.updates.item()
        d = min(self.decay, (1 + n) / (10 + n))
        for avg, new in zip(self.net.parameters(), net.parameters()):
            avg.lerp_(new.detach(), 1 - d)                       # θ̄ ← d·θ̄ + (1 − d)·θ
        for avg, new in zip(self.net.buffers(), net.buffers()):
            avg.copy_(new)

    def train(self, mode: bool = True):
        super().train(mode)
        self.net.eval()                                          # the average is only ever used to sample
        return self
