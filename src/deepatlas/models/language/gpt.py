"""GPT: the generative pre-trained transformer, a decoder-only language model.

A. Radford, K. Narasimhan, T. Salimans, I. Sutskever, 2018. "Improving Language Understanding by
Generative Pre-Training." OpenAI technical report. A. Radford, J. Wu, R. Child, D. Luan, D. Amodei,
I. Sutskever, 2019. "Language Models are Unsupervised Multitask Learners" (GPT-2). OpenAI technical
report. (Neither has an arXiv id.)

A stack of transformer blocks whose self-attention is causal (token t attends to tokens <= t
only) reads a window of T tokens and predicts, at every position at once, the next token. Token
and learned position embeddings are summed at the input; the output head is the token embedding
matrix itself (weight tying), so a token's input and output vectors are one. GPT-2 moved the
layer norm to the input of each sublayer (pre-norm) and added one after the last block, and
scaled the initial weights of the layers that write into the residual stream by 1/sqrt(2L).

    h_0 = U W_e + W_p                                      U: one-hot tokens (T, V), W_e (V, C), W_p (T, C)
    a_l = h_{l-1} + MSA_causal(LN(h_{l-1})),   h_l = a_l + MLP(LN(a_l))          l = 1..L
    P(u_t+1 | u_<=t) = softmax(LN(h_L) W_e^T)
    L(U) = -Σ_t log P(u_t+1 | u_t-k..u_t)                  (the standard language-modelling objective)

Sampling feeds the model its own draws: the last position's logits, divided by a temperature
(-> 0: greedy argmax; 1: the model's distribution), restricted to the top k tokens, give the
next token; the context is cropped to the last block_size tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepatlas.catalog import Bar, Count, Data, Entry, Paper, Positive, Probability, Relation, Size, Train, register
from deepatlas.errors import DeepAtlasError
from deepatlas.models.language.transformer import Block
from deepatlas.tasks.language import NextToken, sample_next


@dataclass
class Config:
    vocab_size: Size = 128
    """token vocabulary V, special tokens included (set from the data)"""
    block_size: Size = 32
    """context length T: learned positions 0..T-1 (set from the data's window)"""
    dim: Size = 96
    """residual-stream width C (n_embd)"""
    layers: Count = 4
    """transformer blocks L"""
    heads: Size = 4
    """attention heads per block (dim must be divisible by heads)"""
    mlp_ratio: Positive = 4.0
    """hidden width of each block's MLP, as a multiple of dim (4 in GPT)"""
    dropout: Probability = 0.0
    """dropout on the embeddings, attention weights and sublayer outputs (0.1 in GPT)"""

    def __post_init__(self):
        if self.dim % self.heads:
            raise DeepAtlasError(f"gpt: dim {self.dim} must be divisible by heads {self.heads}")


class GPT(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, V)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.block_size = cfg.block_size
        self.tok_embed = nn.Embedding(cfg.vocab_size, cfg.dim)      # W_e (V, C)
        self.pos_embed = nn.Embedding(cfg.block_size, cfg.dim)      # W_p (T, C), learned
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout, norm_first=True,
                                          activation="gelu_tanh") for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim)                           # GPT-2's final layer norm
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.head.weight = self.tok_embed.weight                    # weight tying: one (V, C) tensor
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2's init: N(0, 0.02) weights, zero biases; the two projections that write into the residual
        stream (attention output, MLP output) get std 0.02 / sqrt(2L), so the stream's variance does not
        grow with depth."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp[-1]):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * self.cfg.layers))

    def forward(self, idx: Tensor) -> Tensor:
        T = idx.shape[1]
        if T > self.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size {self.block_size}")
        pos = torch.arange(T, device=idx.device)
        h = self.drop(self.tok_embed(idx) + self.pos_embed(pos))    # (B, T, C) + (T, C)
        for block in self.blocks:
            h = block(h, causal=True)                               # (B, T, C)
        return self.head(self.norm(h))                              # (B, T, C) @ (C, V) -> (B, T, V)

    @torch.no_grad()
    def generate(self, idx: Tensor, new_tokens: int, temperature: float = 1.0, top_k: int = 0) -> Tensor:
        """Continue idx (B, T) by `new_tokens` sampled tokens -> (B, T + new_tokens).

        temperature <= 0 picks the argmax (greedy); top_k > 0 samples among the k likeliest tokens only."""
        for _ in range(new_tokens):  # autoregressive: each token depends on the ones drawn before it
            logits = self(idx[:, -self.block_size:])[:, -1]         # (B, V) at the last position
            idx = torch.cat([idx, sample_next(logits, temperature, top_k)], 1)  # (B, T + 1)
        return idx


register(Entry(
    name="gpt", title="GPT (generative pre-trained transformer, GPT-2 layout)", family="language", year=2018,
    paper=Paper("A. Radford, K. Narasimhan, T. Salimans, I. Sutskever",
                "Improving Language Understanding by Generative Pre-Training (GPT-2: A. Radford, J. Wu, R. Child, "
                "D. Luan, D. Amodei, I. Sutskever, Language Models are Unsupervised Multitask Learners, 2019)",
                "OpenAI technical reports, 2018 and 2019 (no arXiv id)"),
    summary="A decoder-only transformer: causal self-attention over learned token and position embeddings, "
            "trained to predict the next token everywhere at once; samples text one token at a time.",
    when_to_use="Generating or continuing text and code; a language model to pre-train once and prompt or "
                "fine-tune for many tasks; any sequence where the next item depends on a long history.",
    when_not="Tasks that read a whole input at once to label it (BERT's bidirectional encoder sees both "
             "sides); tiny data or compute, where an n-gram or a small LSTM is cheaper; exact long-range "
             "recall past the context window.",
    relations=[
        Relation("uses", "transformer", "a decoder-only Transformer, causally masked"),
        Relation("alternative_to", "bert", "left-to-right generation instead of masked bidirectional encoding"),
    ],
    config=Config, build=GPT, objective=NextToken, task="language_model",
    # short windows: learned absolute positions train much faster for T = 32 than for 128 (ce_vs_bigram 0.75
    # vs 0.96 after the same 600 steps of 1,024 characters); 1,200 such steps: a large corpus is trained for a
    # number of steps, as GPT was, rather than for whole passes
    train=Train(epochs=1, steps=1200, batch_size=32, lr=6e-3, warmup=50, schedule="cosine", grad_clip=1.0),
    data=Data("stdlib-text", tokens="char", window=32),
    bar=Bar("ce_vs_bigram", 0.75, "min", 240),
))
