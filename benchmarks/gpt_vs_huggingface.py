"""Speed: deepatlas's GPT against Hugging Face's GPT2LMHeadModel on the identical configuration.

Both models get the same weights (ours copied into Hugging Face's, whose Conv1D layers store the
transposed matrices), the same batch of token ids, the same loss (cross-entropy of the logits
against the next tokens, computed the same way outside the model) and the same optimizer (AdamW).
One training step is forward + backward + optimizer step. Runs alternate ours / Hugging Face so that
load from elsewhere on the machine hits both alike; after warm-up steps the median step time over
the repeats gives training tokens/s for each and the ratio ours / Hugging Face (higher is better).
Uses torch's default thread count unless --threads is given.

It also reports our achieved model FLOP/s as a fraction of this machine's fp32 matmul peak, which
it measures itself (the median time of a large square torch.matmul, 2·n^3 FLOPs, timed in turn with
the training steps), with the usual
training-FLOPs count per token (Kaplan et al. 2020; Chowdhery et al. 2022, appendix B):

    FLOPs/token = 6·N + 12·L·T·C
    N: parameters that multiply activations (all but the position embeddings; the tied
       embedding/head matrix counted once, it is the output matmul), 6 = 2 (multiply-add) x 3
       (forward, and backward for inputs and for weights); 12·L·T·C: the attention scores
       QK^T and the weighted sum AV, forward and backward, in L layers over a context T.

    .venv/bin/python benchmarks/gpt_vs_huggingface.py [--dim 256] [--layers 4] [--heads 4] [--block 128]
        [--batch 8] [--vocab 128] [--repeats 10] [--warmup 3] [--threads N] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from deepatlas.models.language.gpt import GPT, Config


def huggingface_copy(ours: GPT):
    """A GPT2LMHeadModel of the same shape holding our weights."""
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = ours.cfg
    peer = GPT2LMHeadModel(GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.dim,
                                      n_layer=cfg.layers, n_head=cfg.heads, n_inner=int(cfg.dim * cfg.mlp_ratio),
                                      activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                                      attn_pdrop=0.0, layer_norm_epsilon=1e-5, bos_token_id=0, eos_token_id=0,
                                      attn_implementation="sdpa"))  # fused attention, as ours
    peer.load_state_dict(huggingface_state(ours))
    return peer


def huggingface_state(ours: GPT) -> dict[str, torch.Tensor]:
    """Our state under GPT-2's names; Conv1D weights are (in, out), the transpose of nn.Linear's."""
    state = {"transformer.wte.weight": ours.tok_embed.weight, "transformer.wpe.weight": ours.pos_embed.weight,
             "transformer.ln_f.weight": ours.norm.weight, "transformer.ln_f.bias": ours.norm.bias,
             "lm_head.weight": ours.head.weight}
    for i, b in enumerate(ours.blocks):
        p = f"transformer.h.{i}."
        state.update({p + "ln_1.weight": b.norm1.weight, p + "ln_1.bias": b.norm1.bias,
                      p + "ln_2.weight": b.norm2.weight, p + "ln_2.bias": b.norm2.bias,
                      p + "attn.c_attn.weight": b.attn.qkv.weight.T, p + "attn.c_attn.bias": b.attn.qkv.bias,
                      p + "attn.c_proj.weight": b.attn.proj.weight.T, p + "attn.c_proj.bias": b.attn.proj.bias,
                      p + "mlp.c_fc.weight": b.mlp[0].weight.T, p + "mlp.c_fc.bias": b.mlp[0].bias,
                      p + "mlp.c_proj.weight": b.mlp[3].weight.T, p + "mlp.c_proj.bias": b.mlp[3].bias})
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def flops_per_token(model: GPT) -> float:
    """6·N + 12·L·T·C (see the module docstring)."""
    cfg = model.cfg
    n = sum(p.numel() for p in model.parameters()) - model.pos_embed.weight.numel()  # tied matrix counted once
    return 6 * n + 12 * cfg.layers * cfg.block_size * cfg.dim


def make_matmul(n: int):
    """This machine's fp32 peak, measured as the seconds of one large square matmul (2·n^3 FLOPs)."""
    a, b = torch.randn(n, n), torch.randn(n, n)

    def step(*_) -> float:
        start = time.perf_counter()
        torch.matmul(a, b)
        return time.perf_counter() - start
    return step


def make_step(model, optimizer, logits_of):
    """One training step on (x, y): forward, loss, backward, AdamW step; returns its seconds."""
    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        start = time.perf_counter()
        logits = logits_of(model, x)                                          # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start
    return step


def compare(args) -> dict:
    torch.manual_seed(0)
    ours = GPT(Config(vocab_size=args.vocab, block_size=args.block, dim=args.dim, layers=args.layers,
                      heads=args.heads, dropout=0.0))
    peer = huggingface_copy(ours)
    x = torch.randint(0, args.vocab, (args.batch, args.block))
    y = torch.randint(0, args.vocab, (args.batch, args.block))
    with torch.no_grad():  # same network, same numbers
        assert torch.allclose(ours(x), peer(x).logits, atol=1e-4), "the two models disagree"
    steps = {"ours": make_step(ours, torch.optim.AdamW(ours.parameters(), lr=1e-4), lambda m, t: m(t)),
             "huggingface": make_step(peer, torch.optim.AdamW(peer.parameters(), lr=1e-4),
                                      lambda m, t: m(input_ids=t).logits),
             "matmul": make_matmul(args.peak_n)}  # timed between the others, so load hits all three alike
    times = {k: [] for k in steps}
    for i in range(args.warmup + args.repeats):
        for name, step in steps.items():
            seconds = step(x, y)
            if i >= args.warmup:
                times[name].append(seconds)
    tokens = args.batch * args.block
    ours_tps, hf_tps = (tokens / statistics.median(times[k]) for k in ("ours", "huggingface"))
    peak = 2 * args.peak_n ** 3 / statistics.median(times["matmul"])
    achieved = flops_per_token(ours) * ours_tps
    return {"dim": args.dim, "layers": args.layers, "heads": args.heads, "block": args.block, "batch": args.batch,
            "vocab": args.vocab, "threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in ours.parameters()),
            "ours_tokens_per_s": round(ours_tps, 1), "huggingface_tokens_per_s": round(hf_tps, 1),
            "ratio": round(ours_tps / hf_tps, 3), "flops_per_token": flops_per_token(ours),
            "achieved_gflops": round(achieved / 1e9, 2), "peak_gflops": round(peak / 1e9, 2),
            "fraction_of_peak": round(achieved / peak, 3)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=256, help="width C")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--block", type=int, default=128, help="context T")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-n", type=int, default=1024, help="side of the square matmul that measures the peak")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--json", help="write the row to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    r = compare(args)
    print(f"C={r['dim']} L={r['layers']} heads={r['heads']} T={r['block']} B={r['batch']} V={r['vocab']} "
          f"params={r['params']:,} threads={r['threads']}; forward+backward+AdamW per step, median")
    print(f"ours         {r['ours_tokens_per_s']:10.0f} tokens/s")
    print(f"Hugging Face {r['huggingface_tokens_per_s']:10.0f} tokens/s   ratio ours/HF {r['ratio']:.2f}x")
    print(f"model FLOP/s = (6·N + 12·L·T·C) x tokens/s = {r['achieved_gflops']:.1f} GFLOP/s; "
          f"matmul peak {r['peak_gflops']:.1f} GFLOP/s; fraction {r['fraction_of_peak']:.0%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r], f, indent=2)
