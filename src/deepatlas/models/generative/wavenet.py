"""WaveNet: an autoregressive model of raw audio built from causal dilated convolutions.

A. van den Oord, S. Dieleman, H. Zen, K. Simonyan, O. Vinyals, A. Graves, N. Kalchbrenner, A. Senior,
K. Kavukcuoglu, 2016. "WaveNet: A Generative Model for Raw Audio." arXiv:1609.03499.

A waveform is factorized into one conditional per sample, p(x) = Π_t p(x_t | x_1, ..., x_{t−1}). Each sample
is μ-law companded and quantized to 256 classes (eq. 2, data/audio.py), so every conditional is a softmax.
A stack of causal convolutions (padded on the left only, so the output at t sees inputs ≤ t) whose dilation
doubles from layer to layer, 1, 2, 4, ..., 2^(L−1), repeated in blocks, gives a receptive field that grows
exponentially with depth:

    receptive field = 1 + Σ_layers (k − 1)·d                   (k the kernel size, d the layer's dilation)
    z = tanh(W_f ∗_d x) ⊙ σ(W_g ∗_d x)                          (gated activation unit, eq. 3)
    x ← x + W_res z,   skip ← skip + W_skip z                   (residual and parameterized skip connections)
    p(x_{t+1} | x_≤t) = softmax(W_2 ReLU(W_1 ReLU(skip)))_t     (1×1 convolutions to 256 logits)

Training is teacher-forced: one pass over a real window scores every next sample at once. Generation draws
one sample at a time and feeds it back; each causal convolution keeps a queue of its last (k − 1)·d + 1
inputs (the fast-wavenet idea, Paine et al. 2016, arXiv:1611.09482), so a step costs one column per layer and
generating T samples costs O(T), not O(T · receptive field).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import track
from torch import Tensor, nn
from torch.utils.data import DataLoader

from deepatlas.catalog import Bar, Data, Entry, MAX_SIZE, Paper, Positive, Range, Relation, Size, Train, register
from deepatlas.data.audio import SAMPLE_RATE, mu_law_decode, mu_law_encode
from deepatlas.errors import DeepAtlasError
from deepatlas.tasks.generative import Generative, pixel_log_probs


@dataclass
class Config:
    data_shape: Annotated[list[int], Range(1, MAX_SIZE)] = field(default_factory=lambda: [250])
    """(T,): samples per training window (set from the data)"""
    classes: Annotated[int, Range(2, MAX_SIZE)] = 256
    """μ-law quantization levels: the softmax's size (μ = classes − 1)"""
    residual_channels: Size = 32
    """channels of the residual stream between layers"""
    gate_channels: Size = 32
    """channels of each gated unit z = tanh(W_f ∗ x) ⊙ σ(W_g ∗ x)"""
    skip_channels: Size = 64
    """channels of the summed skip connections and of the output head"""
    kernel_size: Annotated[int, Range(2, MAX_SIZE)] = 2
    """taps of every causal convolution (the paper: 2)"""
    layers_per_block: Annotated[int, Range(1, 25)] = 8  # the largest dilation, 2^24, is MAX_SIZE
    """dilated layers per block, with dilations 1, 2, ..., 2^(layers_per_block − 1)"""
    blocks: Size = 2
    """times the dilation pattern repeats (receptive field 1 + (k−1)·(1 + blocks·(2^layers − 1)) = 512 by default)"""
    sample_seconds: Positive = 1.0
    """length of each clip that `sample` generates"""


def pointwise(conv: nn.Conv1d, v: Tensor) -> Tensor:
    """A 1×1 convolution applied to one time step: (B, C_in) -> (B, C_out)."""
    return F.linear(v, conv.weight[..., 0], conv.bias)


class CausalConv1d(nn.Conv1d):
    """A dilated convolution padded on the left only: out_t = Σ_j W_j · x_{t − (k−1−j)·d}, never a later input."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int):
        super().__init__(c_in, c_out, kernel_size, dilation=dilation)
        self.span = (kernel_size - 1) * dilation                     # how far back the taps reach

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.span, 0)))             # (B, C_in, span + T) -> (B, C_out, T)

    def step(self, queue: Tensor, t: int) -> Tensor:
        """The output at time t from a circular queue (B, C_in, span + 1) whose slot t % (span + 1) holds x_t
        and the others the inputs before it (zeros before the start, as the left padding)."""
        k, d = self.kernel_size[0], self.dilation[0]
        slots = [(t - (k - 1 - j) * d) % queue.shape[-1] for j in range(k)]  # tap j reads x_{t − (k−1−j)·d}
        taps = queue[:, :, slots]                                    # (B, C_in, k)
        return torch.einsum("bik,oik->bo", taps, self.weight) + self.bias  # (B, C_out)


class ResidualLayer(nn.Module):
    """Dilated causal conv -> gated unit -> 1×1 to the residual stream and 1×1 to the skip sum."""

    def __init__(self, cfg: Config, dilation: int):
        super().__init__()
        self.dilated = CausalConv1d(cfg.residual_channels, 2 * cfg.gate_channels, cfg.kernel_size, dilation)
        self.residual = nn.Conv1d(cfg.gate_channels, cfg.residual_channels, 1)
        self.skip = nn.Conv1d(cfg.gate_channels, cfg.skip_channels, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f, g = self.dilated(x).chunk(2, dim=1)                       # (B, D, T) each: W_f ∗ x, W_g ∗ x
        z = torch.tanh(f) * torch.sigmoid(g)                         # (B, D, T) gated activation
        return x + self.residual(z), self.skip(z)                    # (B, R, T), (B, S, T)

    def step(self, queue: Tensor, t: int) -> tuple[Tensor, Tensor]:
        f, g = self.dilated.step(queue, t).chunk(2, dim=1)           # (B, D) each
        z = torch.tanh(f) * torch.sigmoid(g)
        return queue[:, :, t % queue.shape[-1]] + pointwise(self.residual, z), pointwise(self.skip, z)


class WaveNet(nn.Module):
    """μ-law classes (B, T) -> logits (B, classes, T); the logits at t predict the sample at t + 1. The classes
    enter as one-hot vectors through a first causal convolution (kernel k, dilation 1)."""

    def __init__(self, cfg: Config):
        super().__init__()
        if min(cfg.classes - 1, cfg.residual_channels, cfg.gate_channels, cfg.skip_channels, cfg.kernel_size - 1,
               cfg.layers_per_block, cfg.blocks) < 1:
            raise DeepAtlasError("wavenet: classes and kernel_size must be at least 2, channels, layers and blocks "
                                 "at least 1")
        self.cfg = cfg
        self.start = CausalConv1d(cfg.classes, cfg.residual_channels, cfg.kernel_size, 1)  # on one-hot inputs
        self.layers = nn.ModuleList(ResidualLayer(cfg, 2 ** i)
                                    for _ in range(cfg.blocks) for i in range(cfg.layers_per_block))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(cfg.skip_channels, cfg.skip_channels, 1), nn.ReLU(),
                                  nn.Conv1d(cfg.skip_channels, cfg.classes, 1))

    @property
    def receptive_field(self) -> int:
        """Input samples (the current one included) that one output sees: 1 + Σ over causal convs of (k−1)·d."""
        return 1 + self.start.span + sum(layer.dilated.span for layer in self.layers)

    def embed(self, q: Tensor) -> Tensor:
        """The first causal convolution on one-hot inputs: classes (B, T), or one-hot rows (B, classes, T) -> (B, R, T).
        For classes it is computed as a lookup, Σ_j W[:, q_{t−(k−1−j)}, j], the same numbers without the one-hots."""
        if q.is_floating_point():
            return self.start(q)                                     # (B, 256, T) -> (B, R, T)
        k, T = self.cfg.kernel_size, q.shape[1]
        h = self.start.bias[:, None]                                 # (R, 1)
        for j in range(k):                                           # tap j reads the class k−1−j steps back
            e = F.embedding(q, self.start.weight[:, :, j].T).transpose(1, 2)  # (B, T, R) -> (B, R, T)
            h = h + F.pad(e, (k - 1 - j, 0))[:, :, :T]               # shifted right: zeros before the start
        return h

    def forward(self, q: Tensor) -> Tensor:
        """Classes (B, T) long, or one-hot rows (B, classes, T) float (differentiable: the causality tests)."""
        h = self.embed(q)                                            # (B, R, T)
        skip = 0
        for layer in self.layers:
            h, s = layer(h)                                          # (B, R, T), (B, S, T)
            skip = skip + s
        return self.head(skip)                                       # (B, 256, T)

    @torch.no_grad()
    def generate(self, first: Tensor, steps: int, keep_logits: bool = False) -> tuple[Tensor, Tensor | None]:
        """Classes (B, steps) that start with `first` (B,), each next one drawn from the softmax at the one before,
        with a queue per causal convolution; also the logits (B, classes, steps) with `keep_logits` (for tests)."""
        B, device = len(first), first.device
        convs = [self.start, *(layer.dilated for layer in self.layers)]
        queues = [torch.zeros(B, c.in_channels, c.span + 1, device=device) for c in convs]  # zeros: left padding
        out = torch.empty(B, steps, dtype=torch.long, device=device)
        logits_all = torch.zeros(B, self.cfg.classes, steps, device=device) if keep_logits else None
        out[:, 0] = first
        # a progress bar for long clips (a step per sample: a 1 s clip at 8 kHz takes several seconds)
        for t in track(range(steps - 1), description="wavenet: generating", transient=True,
                       console=Console(stderr=True), disable=steps * len(self.layers) < 50_000):
            q = queues[0]
            q[:, :, t % q.shape[-1]] = F.one_hot(out[:, t], self.cfg.classes).float()
            h = self.start.step(q, t)                                # (B, R)
            skip = 0
            for layer, q in zip(self.layers, queues[1:]):
                q[:, :, t % q.shape[-1]] = h                         # the layer's input at t joins its queue
                h, s = layer.step(q, t)                              # (B, R), (B, S)
                skip = skip + s
            logits = pointwise(self.head[3], pointwise(self.head[1], skip.relu()).relu())  # (B, 256): the head's 1×1s
            if keep_logits:
                logits_all[:, :, t] = logits
            out[:, t + 1] = torch.multinomial(logits.softmax(-1), 1)[:, 0]  # x_{t+1} ~ p(· | x_≤t)
        return out, logits_all


class WaveNetObjective(Generative):
    """Teacher-forced next-sample cross-entropy (nats per sample) next to a unigram μ-law baseline."""

    not_exported = "sampling one audio sample at a time (a pass per sample)"

    def __init__(self, model: WaveNet):
        super().__init__(model)
        classes = model.cfg.classes
        # log p(class) of the unigram baseline over μ-law classes, (classes,): uniform until `prepare`
        self.register_buffer("unigram", torch.full((classes,), 1.0 / classes).log())

    def prepare(self, data) -> None:
        x = next(iter(DataLoader(data.train, batch_size=len(data.train))))[0]  # (N, T) waves in [−1, 1]
        q = mu_law_encode(x, self.model.cfg.classes)
        self.unigram.copy_(pixel_log_probs(q.reshape(-1, 1), self.model.cfg.classes)[:, 0])  # add-one smoothed

    def measure(self, batch) -> dict[str, Tensor]:
        q = mu_law_encode(batch[0], self.model.cfg.classes)          # (B, T) classes
        logits = self.model(q)                                       # (B, 256, T)
        # the logits at t score x_{t+1}; x_0 has no predecessor and is not scored
        nll = F.cross_entropy(logits[:, :, :-1], q[:, 1:])
        unigram = -self.unigram[q[:, 1:]].mean()
        return {"loss": nll, "nll": nll.detach(), "unigram_nll": unigram}

    def summarize(self, means: dict[str, float]) -> dict[str, float]:
        return {**means, "nll_vs_unigram": means["nll"] / max(means["unigram_nll"], 1e-12)}

    def export_inputs(self, data, n: int) -> dict[str, Tensor]:
        """The network reads μ-law classes (B, T), not the waves."""
        return {"classes": mu_law_encode(super().export_inputs(data, n)["input"], self.model.cfg.classes)}

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """n clips (n, sample_seconds · rate) in [−1, 1], generated from silence."""
        rate = self.data_spec.get("sample_rate", SAMPLE_RATE)
        steps = max(2, round(self.model.cfg.sample_seconds * rate))
        silence = mu_law_encode(torch.zeros(n, device=self.unigram.device), self.model.cfg.classes)  # (n,)
        q, _ = self.model.generate(silence, steps)
        return mu_law_decode(q, self.model.cfg.classes)              # (n, steps)


register(Entry(
    name="wavenet", title="WaveNet (causal dilated convolutions over raw audio)", family="generative", year=2016,
    paper=Paper("A. van den Oord, S. Dieleman, H. Zen, K. Simonyan, O. Vinyals, A. Graves, N. Kalchbrenner, "
                "A. Senior, K. Kavukcuoglu", "WaveNet: A Generative Model for Raw Audio", "arXiv:1609.03499"),
    summary="Raw audio sample by sample: μ-law classes, a softmax over the next sample computed by a stack of "
            "causal convolutions whose dilation doubles per layer (a receptive field exponential in depth), "
            "gated tanh·sigmoid units, residual and skip connections; generation feeds each sample back.",
    when_to_use="Likelihood models of waveforms or other long 1-D signals with local structure; vocoders and "
                "audio generation (conditioned on text or features in the paper); a strong, parallel-to-train "
                "alternative to RNNs for sequences sampled densely in time.",
    when_not="Real-time generation without caching or distillation (one network step per sample); structure "
             "longer than the receptive field (seconds of audio need many layers or a hierarchy); "
             "sequence classification or forecasting (tcn, lstm).",
    relations=[
        Relation("builds_on", "pixelcnn", "PixelCNN's gated masked convolutions as dilated causal 1-D convolutions "
                 "for audio"),
    ],
    config=Config, build=WaveNet, objective=WaveNetObjective, task="generation",
    # windows of 250 samples, 32 per clip: at the same samples per step, many short windows learned faster than
    # 8 of 1,000 (validation ratio 0.47 against 0.60 after two epochs); the whole 512-sample receptive field is
    # used in generation, where the context is not cut at a window's start. Channels 32/32/64 and 4 epochs
    # (test ratio 0.36, about 100 s on a quiet machine) over 16/16/32 and 2 epochs (0.51 in 28 s): the wider,
    # longer-trained model's generated clips come closer to holding a pitch
    train=Train(epochs=4, batch_size=32, lr=1e-2, grad_clip=1.0),
    data=Data("tones", window=250),
    bar=Bar("nll_vs_unigram", 0.7, "min", 180),
))
