"""Speed: the ddpm entry's U-Net (nn/unet.py) against diffusers' UNet2DModel at the identical configuration.

Both networks are built with the ddpm recipe's layout: 32×32 greyscale images, widths (16, 32, 32) over three
resolutions, one residual block per level down (two up), group norm of 8 groups, one-head self-attention at the
lowest resolution (8×8) and in the middle block, sinusoidal time embeddings through a two-layer MLP to 4× the
width, strided-convolution downsampling and nearest + convolution upsampling. Their parameter counts are printed
(and must agree). Ours keeps its weights and activations channels-last (nn/unet.py); diffusers runs as built, and
with `--channels-last` converted to the same memory format too (its docs' advice). Two measures, alternating
ours / theirs, the median reported with ours / diffusers:

1. a training step at batch 64: ε-prediction forward, MSE, backward and an Adam step;
2. sampling time per image: one denoising pass at batch 256, times the 50 steps of DDIM-50, per image.

    .venv/bin/python benchmarks/ddpm_vs_diffusers.py [--threads N] [--repeats 7] [--channels-last] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from deepatlas.nn.unet import UNet

CHANNELS, MULTS, BLOCKS, GROUPS, SIZE = 16, (1, 2, 2), 1, 8, 32
TRAIN_BATCH, SAMPLE_BATCH, DDIM_STEPS = 64, 256, 50


def ours() -> torch.nn.Module:
    return UNet(1, 1, CHANNELS, MULTS, BLOCKS, groups=GROUPS)


class Theirs(torch.nn.Module):
    """diffusers' UNet2DModel with the same layout; forward(x, t) returns the tensor."""

    def __init__(self, memory_format=torch.contiguous_format):
        super().__init__()
        from diffusers import UNet2DModel
        self.memory_format = memory_format
        widths = tuple(CHANNELS * m for m in MULTS)
        self.net = UNet2DModel(sample_size=SIZE, in_channels=1, out_channels=1, block_out_channels=widths,
                               layers_per_block=BLOCKS, norm_num_groups=GROUPS, attention_head_dim=widths[-1],
                               down_block_types=("DownBlock2D",) * (len(widths) - 1) + ("AttnDownBlock2D",),
                               up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (len(widths) - 1),
                               flip_sin_to_cos=False, freq_shift=0, add_attention=True)
        self.net.to(memory_format=memory_format)

    def forward(self, x, t):
        return self.net(x.contiguous(memory_format=self.memory_format), t).sample


def train_step(net, opt) -> float:
    x, t, noise = torch.randn(TRAIN_BATCH, 1, SIZE, SIZE), torch.randint(0, 1000, (TRAIN_BATCH,)), torch.randn(TRAIN_BATCH, 1, SIZE, SIZE)
    start = time.perf_counter()
    loss = F.mse_loss(net(x, t), noise)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return time.perf_counter() - start


@torch.no_grad()
def sample_pass(net) -> float:
    x, t = torch.randn(SAMPLE_BATCH, 1, SIZE, SIZE), torch.full((SAMPLE_BATCH,), 500)
    start = time.perf_counter()
    net(x, t)
    return (time.perf_counter() - start) * DDIM_STEPS / SAMPLE_BATCH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--channels-last", action="store_true", help="diffusers' U-Net channels-last as well")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    nets = {"deepatlas": ours(),
            "diffusers": Theirs(torch.channels_last if args.channels_last else torch.contiguous_format)}
    params = {k: sum(p.numel() for p in n.parameters()) for k, n in nets.items()}
    print(f"parameters: deepatlas {params['deepatlas']:,}, diffusers {params['diffusers']:,}; "
          f"threads {torch.get_num_threads()}; diffusers {'channels-last' if args.channels_last else 'as built'}")
    opts = {k: torch.optim.Adam(n.parameters(), lr=1e-4) for k, n in nets.items()}
    times = {k: {"train": [], "sample": []} for k in nets}
    for k, n in nets.items():  # warm-up
        train_step(n, opts[k])
        n.eval()
        sample_pass(n)
        n.train()
    for _ in range(args.repeats):
        for k, n in nets.items():
            times[k]["train"].append(train_step(n, opts[k]))
            n.eval()
            times[k]["sample"].append(sample_pass(n))
            n.train()
    result = {"threads": torch.get_num_threads(), "params": params, "diffusers_channels_last": args.channels_last}
    for what, unit in (("train", f"s per step of {TRAIN_BATCH}"), ("sample", f"s per image, DDIM-{DDIM_STEPS}")):
        a, b = (statistics.median(times[k][what]) for k in nets)
        result[what] = {"deepatlas": a, "diffusers": b, "ratio": a / b}
        print(f"{what:>6}: deepatlas {a:.4f}, diffusers {b:.4f} {unit}: ours/diffusers {a / b:.2f}×")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
