"""The Transformer: an encoder-decoder built from attention alone.

A. Vaswani, N. Shazeer, N. Parmar, J. Uszkoreit, L. Jones, A. N. Gomez, L. Kaiser, I. Polosukhin,
2017. "Attention Is All You Need." NeurIPS 2017, arXiv:1706.03762.

No recurrence: an encoder of N layers (self-attention + position-wise MLP) turns the source into
states the decoder attends to; a decoder of N layers (causal self-attention, cross-attention over
the encoder's states, MLP) is a conditional language model of the target, trained on all positions
at once. Order comes only from the sinusoidal positions added to the token embeddings:

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V                       (1)
    MultiHead(Q, K, V) = Concat(head_1..head_h) W^O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)
    PE(pos, 2i) = sin(pos / 10000^(2i/d_model)),  PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))
    x_0 = sqrt(d_model) E[token] + PE(pos)
    sublayer: LN(x + Dropout(f(x)))   (post-norm, the paper's)   or   x + Dropout(f(LN(x)))   (pre-norm)
    lrate = d_model^-0.5 min(step^-0.5, step warmup^-1.5)                       (3)

The mask M is -inf where a query may not look: the source's padding (encoder self-attention and the
decoder's cross-attention) and, in the decoder's self-attention, every later position (the causal
mask), so the decoder trained in parallel is the same function as the one run step by step. The
loss is the cross-entropy with label smoothing ε_ls: the target distribution puts 1 - ε_ls on the
true token and spreads ε_ls over the vocabulary. The decoder's input embedding and its output
projection share one matrix (the paper also shares it with the source embedding, which needs a
joint vocabulary). Decoding is greedy or a beam search ranking finished outputs by
log p / lp(Y) with Wu et al.'s length penalty lp(Y) = ((5 + |Y|) / 6)^α.

Here the learning-rate schedule (3) is the engine's `inverse_sqrt` schedule: linear warm-up to the
recipe's peak lr over `warmup` steps, then ∝ 1/sqrt(step).

The encoder alone also reads series (`SequenceEncoder`, the entry's form for the sequence tasks): a linear map of
each step's features in place of the token embedding, the same positions and layers, every step attending to the
whole series (or, with `causal`, to itself and the past only), and a head on the last step or on every step.

The attention (1) is written out in this file (`attention`, `MultiHeadAttention`, `Block`), and
GPT, BERT and ViT import it from here. By default the layers compute the same function through
torch's fused kernel `F.scaled_dot_product_attention` (`fused=True`: one kernel, no (T, S) weights
kept in memory); `fused=False` runs the explicit softmax(Q K^T / sqrt(d_k) + M) V below, which the
tests prove equal to the fused kernel, in outputs and gradients, to 1e-5.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.catalog import (Bar, Count, Data, Entry, Form, NonNegative, Paper, Probability, Relation, Size, Train,
                               register)
from deepatlas.errors import DeepAtlasError
from deepatlas.nn.regularization import DropPath
from deepatlas.tasks.sequence import SequenceObjective
from deepatlas.tasks.translation import BOS, EOS, PAD, Translation

POSITIONS = 256  # rows of the precomputed sinusoid table; longer sequences compute theirs when met
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "gelu_tanh": lambda: nn.GELU(approximate="tanh")}


@dataclass
class Config:
    src_vocab: Size = 64
    """source vocabulary size, special tokens included (set from the data)"""
    tgt_vocab: Size = 16
    """target vocabulary size, special tokens included (set from the data)"""
    d_model: Size = 64
    """width of every token state (the paper's base model: 512)"""
    heads: Size = 4
    """attention heads h per attention layer; d_k = d_v = d_model / h (base: 8)"""
    enc_layers: Count = 2
    """encoder layers N (base: 6)"""
    dec_layers: Size = 2
    """decoder layers N (base: 6)"""
    d_ff: Size = 128
    """hidden width of the position-wise feed-forward network, ReLU (base: 2048)"""
    dropout: Probability = 0.0
    """P_drop on embeddings + positions, sublayer outputs, attention weights, the MLP's hidden layer (base: 0.1)"""
    norm_first: bool = False
    """pre-norm x + f(LN(x)) with a final LayerNorm on encoder and decoder; false: the paper's post-norm LN(x + f(x))"""
    tie_embeddings: bool = True
    """the decoder's output projection reuses its input embedding matrix (the paper's weight sharing)"""
    label_smoothing: Probability = 0.1
    """ε_ls: training targets put 1 - ε_ls on the true token and spread ε_ls over the vocabulary"""
    beam: Size = 4
    """default beam width for predict (1: greedy); validation always decodes greedily"""
    length_penalty: NonNegative = 0.6
    """α of the length penalty ((5 + |Y|) / 6)^α dividing log p when the beam ranks finished outputs (0: raw log p)"""
    fused: bool = True
    """attention through torch's fused F.scaled_dot_product_attention; false: the explicit softmax(Q K^T / sqrt(d_k) + M) V"""

    def __post_init__(self):
        if self.d_model % self.heads:
            raise DeepAtlasError(f"transformer: d_model {self.d_model} must be divisible by heads {self.heads}")


# ---- attention: equation (1), the masks, the positions, the layer -------------------------------
# Shapes: B batch, T query positions, S key positions (S = T in self-attention), C = d_model,
# nh heads, hs = C / nh the head size (the paper's d_k = d_v).

def padding_mask(keep: Tensor) -> Tensor:
    """(B, S) bool, True at real tokens -> an attention mask (B, 1, 1, S): no query looks at padding."""
    return keep[:, None, None, :]


def causal_mask(length: int, device=None) -> Tensor:
    """(T, T) bool, True on and below the diagonal: position t looks at positions <= t only."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def with_causal(mask: Tensor | None, length: int, device=None) -> Tensor:
    """The causal mask (T, T), combined with `mask` (True = may attend) when one is given."""
    causal = causal_mask(length, device)
    return causal if mask is None else mask & causal


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(same): (length, dim)."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]                           # (T, 1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (d/2,)
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return pe


def attention_probs(q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
    """The attention weights softmax(Q K^T / sqrt(d_k) + M): q (B, nh, T, hs), k (B, nh, S, hs) -> (B, nh, T, S).

    mask: bool, True = may attend, broadcastable to (B, nh, T, S); M is 0 there and -inf elsewhere.
    A query that may attend to no key at all gets all-zero weights (as torch's fused kernel gives it)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, nh, T, hs) @ (B, nh, hs, S) -> (B, nh, T, S)
    if mask is None:
        return scores.softmax(-1)                              # (B, nh, T, S), each row sums to 1
    weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)  # + M, then the softmax over keys S
    return weights.masked_fill(~mask.any(-1, keepdim=True), 0.0)  # rows with no allowed key: 0, not NaN


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, dropout: float = 0.0) -> Tensor:
    """Equation (1) written out, every head at once: softmax(Q K^T / sqrt(d_k) + M) V.

    q (B, nh, T, hs), k and v (B, nh, S, hs), mask as in `attention_probs` -> (B, nh, T, hs). Dropout
    (training only: pass 0 at eval) zeroes attention weights at random, as the fused kernel's dropout_p does."""
    weights = F.dropout(attention_probs(q, k, mask), dropout)  # (B, nh, T, S)
    return weights @ v                                         # (B, nh, T, S) @ (B, nh, S, hs) -> (B, nh, T, hs)


class MultiHeadAttention(nn.Module):
    """Self-attention (memory=None) or cross-attention: queries from x, keys and values from memory.

    MultiHead(Q, K, V) = Concat(head_1..head_h) W^O. One (3C, C) projection holds W^Q, W^K, W^V stacked
    (the heads side by side in each), so self-attention projects with one matmul. `fused` computes (1)
    with torch's F.scaled_dot_product_attention, `fused=False` with `attention` above: the same function."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, bias: bool = True, fused: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads, self.dropout, self.fused = heads, dropout, fused
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)

    def project(self, x: Tensor, memory: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Q = x W^Q, K = m W^K, V = m W^V (m = memory, or x itself), split into heads: (B, nh, T|S, hs) each."""
        B, T, C = x.shape
        hs = C // self.heads
        if memory is None:
            qkv = self.qkv(x).view(B, T, 3, self.heads, hs)                             # (B, T, 3, nh, hs)
            return qkv.permute(2, 0, 3, 1, 4).unbind(0)                                  # 3 x (B, nh, T, hs)
        w_q, w_kv = self.qkv.weight.split([C, 2 * C])
        b_q, b_kv = self.qkv.bias.split([C, 2 * C]) if self.qkv.bias is not None else (None, None)
        q = F.linear(x, w_q, b_q).view(B, T, self.heads, hs).transpose(1, 2)             # (B, nh, T, hs)
        kv = F.linear(memory, w_kv, b_kv).view(B, -1, 2, self.heads, hs)                 # (B, S, 2, nh, hs)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)                                       # 2 x (B, nh, S, hs)
        return q, k, v

    def forward(self, x: Tensor, memory: Tensor | None = None, mask: Tensor | None = None,
                causal: bool = False) -> Tensor:
        """x (B, T, C), memory (B, S, C) or None; mask bool, True = may attend, broadcastable to (B, nh, T, S);
        causal: query t attends to keys <= t only (self-attention)."""
        B, T, C = x.shape
        q, k, v = self.project(x, memory)                                                # (B, nh, T|S, hs)
        dropout = self.dropout if self.training else 0.0
        if self.fused:  # torch's kernel takes the causal mask as a flag, or folded into the given mask
            if causal and mask is not None:
                mask, causal = mask & causal_mask(T, x.device), False
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                               dropout_p=dropout)                        # (B, nh, T, hs)
        else:
            y = attention(q, k, v, with_causal(mask, T, x.device) if causal else mask, dropout)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, nh, hs) -> (B, T, C): heads concatenated, W^O

    def weights(self, x: Tensor, memory: Tensor | None = None, mask: Tensor | None = None,
                causal: bool = False) -> Tensor:
        """The attention weights of every head, (B, nh, T, S): what the fused kernel computes but does not return."""
        q, k, _ = self.project(x, memory)                                                # (B, nh, T|S, hs)
        return attention_probs(q, k, with_causal(mask, x.shape[1], x.device) if causal else mask)


def attention_weights(attn: MultiHeadAttention, x: Tensor, memory: Tensor, mask: Tensor | None) -> Tensor:
    """softmax(Q K^T / sqrt(d_k)) of a cross-attention layer, averaged over its heads: (B, T, S)."""
    return attn.weights(x, memory, mask).mean(1)                # (B, nh, T, S) -> (B, T, S)


class Block(nn.Module):
    """One transformer layer: self-attention, cross-attention over `memory` (if `cross`), then an MLP.

    One block serves every transformer in the atlas. Pre-norm (`norm_first`, GPT-2 and ViT):
    x + f(LN(x)). Post-norm (Vaswani et al., BERT): LN(x + f(x)). Each sublayer's output goes through
    dropout (and stochastic depth) before the sum; a decoder block adds cross-attention over the
    encoder's output.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 drop_path: float = 0.0, norm_first: bool = True, cross: bool = False,
                 activation: str = "gelu", eps: float = 1e-5, fused: bool = True):
        super().__init__()
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = MultiHeadAttention(dim, heads, dropout, fused=fused)
        if cross:
            self.norm_cross = nn.LayerNorm(dim, eps=eps)
            self.cross_attn = MultiHeadAttention(dim, heads, dropout, fused=fused)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), ACTIVATIONS[activation](), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)
        self.drop_path = DropPath(drop_path)

    def _residual(self, x: Tensor, norm: nn.LayerNorm, sublayer) -> Tensor:
        if self.norm_first:
            return x + self.drop_path(self.drop(sublayer(norm(x))))
        return norm(x + self.drop_path(self.drop(sublayer(x))))

    def forward(self, x: Tensor, mask: Tensor | None = None, causal: bool = False,
                memory: Tensor | None = None, memory_mask: Tensor | None = None) -> Tensor:
        """x (B, T, C); mask/causal for self-attention; memory (B, S, C) and memory_mask for cross-attention."""
        x = self._residual(x, self.norm1, lambda h: self.attn(h, mask=mask, causal=causal))
        if memory is not None:
            x = self._residual(x, self.norm_cross, lambda h: self.cross_attn(h, memory, mask=memory_mask))
        return self._residual(x, self.norm2, self.mlp)  # (B, T, C)


# ---- the encoder-decoder -------------------------------------------------------------------------

class Transformer(nn.Module):
    """Encoder-decoder with the Translation contract: forward (teacher forcing) and decode (free-running)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.beam = cfg.beam
        d = cfg.d_model
        self.src_embed = nn.Embedding(cfg.src_vocab, d)
        self.tgt_embed = nn.Embedding(cfg.tgt_vocab, d)
        for embed in (self.src_embed, self.tgt_embed):  # N(0, 1/d): sqrt(d) E[token] has unit-variance entries
            nn.init.normal_(embed.weight, std=d ** -0.5)
        self.register_buffer("pe", sinusoidal_positions(POSITIONS, d), persistent=False)  # (POSITIONS, d)
        self.drop = nn.Dropout(cfg.dropout)
        ratio = (cfg.d_ff + 0.5) / d  # Block's MLP is int(d * ratio) wide: exactly d_ff
        self.encoder = nn.ModuleList(Block(d, cfg.heads, ratio, cfg.dropout, norm_first=cfg.norm_first,
                                           activation="relu", fused=cfg.fused) for _ in range(cfg.enc_layers))
        self.decoder = nn.ModuleList(Block(d, cfg.heads, ratio, cfg.dropout, norm_first=cfg.norm_first,
                                           cross=True, activation="relu", fused=cfg.fused)
                                     for _ in range(cfg.dec_layers))
        # post-norm layers already end in a LayerNorm; pre-norm ones leave the residual stream unnormalized
        self.enc_norm = nn.LayerNorm(d) if cfg.norm_first else nn.Identity()
        self.dec_norm = nn.LayerNorm(d) if cfg.norm_first else nn.Identity()
        self.out = nn.Linear(d, cfg.tgt_vocab)
        if cfg.tie_embeddings:
            self.out.weight = self.tgt_embed.weight  # one (V, d) matrix: embeds the input, scores the output

    def embed(self, table: nn.Embedding, ids: Tensor) -> Tensor:
        """x_0 = sqrt(d_model) E[ids] + PE: (B, T) -> (B, T, d)."""
        T = ids.shape[1]
        pe = self.pe[:T] if T <= len(self.pe) else sinusoidal_positions(T, self.cfg.d_model).to(self.pe)
        return self.drop(table(ids) * math.sqrt(self.cfg.d_model) + pe)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """src (B, S) -> encoder states (B, S, d) and the mask of real source tokens (B, 1, 1, S)."""
        mask = padding_mask(src != PAD)                  # no query looks at the source's padding
        x = self.embed(self.src_embed, src)
        for block in self.encoder:
            x = block(x, mask=mask)
        return self.enc_norm(x), mask

    def decoder_states(self, tgt_in: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        """tgt_in (B, T), memory (B, S, d) -> the top decoder states (B, T, d); position t sees tgt_in[:, :t+1]."""
        x = self.embed(self.tgt_embed, tgt_in)
        for block in self.decoder:
            x = block(x, causal=True, memory=memory, memory_mask=memory_mask)
        return self.dec_norm(x)

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """src (B, S), tgt_in (B, T) = BOS + target[:-1] -> logits (B, T, V)."""
        memory, mask = self.encode(src)
        return self.out(self.decoder_states(tgt_in, memory, mask))

    # ---- decoding ------------------------------------------------------------------------------

    def decode(self, src: Tensor, max_len: int, beam: int = 1) -> tuple[Tensor, Tensor | None]:
        """Free-running decoding: tokens (B, T') ending in EOS then PAD, attention (B, T', S)."""
        return self.greedy(src, max_len) if beam <= 1 else self.beam_search(src, max_len, beam)

    @staticmethod
    def log_probs(logits: Tensor) -> Tensor:
        """Log-probabilities of the next token; PAD and BOS are never outputs."""
        return logits.index_fill(-1, torch.tensor([PAD, BOS], device=logits.device), float("-inf")).log_softmax(-1)

    def next_log_probs(self, prefix: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        """log p(next token | prefix (N, t), source) for every row: (N, V). The prefix is re-read whole at each
        step (no key/value cache): for outputs of a few dozen tokens that costs little and keeps one code path."""
        return self.log_probs(self.out(self.decoder_states(prefix, memory, memory_mask)[:, -1]))

    @torch.no_grad()
    def cross_attention(self, tokens: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        """The last decoder layer's cross-attention weights over the source, averaged over heads, for decoded
        `tokens` (B, T'): (B, T', S), zero after EOS. One teacher-forced pass over BOS + tokens gives what each
        step saw when it chose its token, since the decoder's self-attention is causal."""
        last = self.decoder[-1].cross_attn
        seen = {}

        def keep_input(module, args) -> None:  # a pre-hook that returns None leaves the call unchanged
            seen["x"] = args[0]

        hook = last.register_forward_pre_hook(keep_input)
        try:
            tgt_in = torch.cat([torch.full_like(tokens[:, :1], BOS), tokens[:, :-1]], 1)  # (B, T')
            self.decoder_states(tgt_in, memory, memory_mask)
        finally:
            hook.remove()
        weights = attention_weights(last, seen["x"], memory, memory_mask)  # (B, T', S)
        return weights.masked_fill((tokens == PAD)[..., None], 0.0)

    @torch.no_grad()
    def greedy(self, src: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
        """Feed back the most probable token at every step, all sentences at once, until each has said EOS."""
        memory, mask = self.encode(src)
        out = torch.full((len(src), 1), BOS, dtype=torch.long, device=src.device)  # (B, 1 + t)
        done = torch.zeros(len(src), dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            y = self.next_log_probs(out, memory, mask).argmax(-1).masked_fill(done, PAD)  # (B,); PAD once finished
            out = torch.cat([out, y[:, None]], 1)
            done = done | (y == EOS)
            if done.all():
                break
        tokens = out[:, 1:]                                                       # (B, T')
        return tokens, self.cross_attention(tokens, memory, mask)

    @torch.no_grad()
    def beam_search(self, src: Tensor, max_len: int, width: int) -> tuple[Tensor, Tensor]:
        """The best of `width` hypotheses by log p / ((5 + |Y|) / 6)^α: tokens (B, T'), attention (B, T', S)."""
        tokens, log_p, lengths = self.hypotheses(src, max_len, width)
        score = log_p / ((5 + lengths) / 6) ** self.cfg.length_penalty           # (B, K)
        best = tokens[torch.arange(len(src), device=src.device), score.argmax(-1)]  # (B, T')
        memory, mask = self.encode(src)
        return best, self.cross_attention(best, memory, mask)

    @torch.no_grad()
    def hypotheses(self, src: Tensor, max_len: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
        """Beam search over all sentences and beams at once: at every step each sentence keeps the `width`
        most probable continuations of its hypotheses. A finished hypothesis (it said EOS) goes on only with
        PAD at no cost, so it competes with the live ones on its final log p. Returns tokens (B, K, T'),
        log p (B, K) and lengths with EOS (B, K)."""
        B, K, V, device = len(src), width, self.cfg.tgt_vocab, src.device
        memory, mask = self.encode(src)
        memory, mask = memory.repeat_interleave(K, 0), mask.repeat_interleave(K, 0)  # (B·K, S, d), (B·K, 1, 1, S)
        log_p = torch.full((B, K), float("-inf"), device=device)
        log_p[:, 0] = 0.0                             # one live hypothesis at the start: no duplicate beams
        done = torch.zeros(B, K, dtype=torch.bool, device=device)
        lengths = torch.zeros(B, K, device=device)
        pad_only = torch.full((V,), float("-inf"), device=device)
        pad_only[PAD] = 0.0                           # what a finished hypothesis may append
        out = torch.full((B * K, 1), BOS, dtype=torch.long, device=device)  # (B·K, 1 + t)
        for _ in range(max_len):
            step = self.next_log_probs(out, memory, mask).view(B, K, V)
            step = torch.where(done[..., None], pad_only, step)
            log_p, flat = (log_p[..., None] + step).view(B, K * V).topk(K, -1)   # (B, K) best continuations
            parent, y = flat // V, flat % V                                       # which hypothesis, which token
            was_done = done.gather(1, parent)
            lengths = lengths.gather(1, parent) + (~was_done).float()
            done = was_done | (y == EOS)
            rows = (torch.arange(B, device=device)[:, None] * K + parent).flatten()  # (B·K) parent rows
            out = torch.cat([out[rows], y.view(-1, 1)], 1)
            if done.all():
                break
        return out[:, 1:].view(B, K, -1), log_p, lengths


# ---- the encoder alone, on the sequence tasks ------------------------------------------------------------------

@dataclass
class SequenceConfig:
    """The encoder stack reading a series of feature vectors (the sequence tasks' contract)."""
    in_features: Size = 2
    """input features per time step (set from the data)"""
    n_outputs: Size = 1
    """outputs: 1 for regression, the number of classes for classification (set from the data)"""
    per_step: bool = False
    """one output per time step (many-to-many) instead of one from the last step (set from the data)"""
    d_model: Size = 64
    """width of every position's state"""
    heads: Size = 4
    """attention heads per layer"""
    layers: Size = 2
    """encoder layers N"""
    d_ff: Size = 128
    """hidden width of the position-wise feed-forward network, ReLU"""
    dropout: Probability = 0.0
    """P_drop on the input + positions, sublayer outputs, attention weights and the MLP's hidden layer"""
    norm_first: bool = False
    """pre-norm x + f(LN(x)); false: the paper's post-norm LN(x + f(x))"""
    causal: bool = False
    """each step attends to itself and earlier steps only (the decoder's mask); false: the encoder's, every step
    sees the whole sequence, as a bidirectional RNN does"""
    fused: bool = True
    """attention through torch's fused kernel; false: the explicit softmax(Q K^T / sqrt(d_k) + M) V"""

    def __post_init__(self):
        if self.d_model % self.heads:
            raise DeepAtlasError(f"transformer: d_model {self.d_model} must be divisible by heads {self.heads}")


class SequenceEncoder(nn.Module):
    """x (B, T, F) -> (B, K) from the last step's state, or (B, T, K) with `per_step`: a linear map of each step's
    features in place of the token embedding, the same sinusoidal positions and the same layers as the encoder."""

    def __init__(self, cfg: SequenceConfig):
        super().__init__()
        self.cfg = cfg
        self.input = nn.Linear(cfg.in_features, cfg.d_model)
        self.register_buffer("pe", sinusoidal_positions(POSITIONS, cfg.d_model), persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        ratio = (cfg.d_ff + 0.5) / cfg.d_model
        self.layers = nn.ModuleList(Block(cfg.d_model, cfg.heads, ratio, cfg.dropout, norm_first=cfg.norm_first,
                                          activation="relu", fused=cfg.fused) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.d_model) if cfg.norm_first else nn.Identity()
        self.head = nn.Linear(cfg.d_model, cfg.n_outputs)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.cfg.in_features:
            raise DeepAtlasError(f"transformer: expected inputs (batch, time, {self.cfg.in_features}), "
                                 f"got {tuple(x.shape)}")
        T = x.shape[1]
        pe = self.pe[:T] if T <= len(self.pe) else sinusoidal_positions(T, self.cfg.d_model).to(self.pe)
        h = self.drop(self.input(x) + pe)                                     # (B, T, d)
        for layer in self.layers:
            h = layer(h, causal=self.cfg.causal)
        h = self.norm(h)
        return self.head(h) if self.cfg.per_step else self.head(h[:, -1])    # (B, T, K) or (B, K)


def objective(model: Transformer) -> Translation:
    """Cross-entropy of the next target token with the model's label smoothing."""
    return Translation(model, label_smoothing=model.cfg.label_smoothing)


register(Entry(
    name="transformer", title="Transformer (encoder-decoder)", family="language", year=2017,
    paper=Paper("A. Vaswani, N. Shazeer, N. Parmar, J. Uszkoreit, L. Jones, A. N. Gomez, L. Kaiser, I. Polosukhin",
                "Attention Is All You Need", "arXiv:1706.03762"),
    summary="Encoder and decoder stacks of multi-head self-attention and position-wise MLPs, with sinusoidal "
            "positions and cross-attention from decoder to encoder: sequence to sequence with no recurrence, "
            "trained on all positions in parallel.",
    when_to_use="Mapping one sequence to another (translation, normalization, summarization, code to code) with "
                "enough data: trains faster than an RNN encoder-decoder because every position is computed at "
                "once, and attends directly to any source position however far.",
    when_not="Tiny data (an RNN seq2seq or a rule may do as well with less tuning); very long inputs, where "
             "attention's cost grows with the square of the length; tasks that only continue text (a "
             "decoder-only model such as GPT) or only classify it (an encoder such as BERT).",
    relations=[
        Relation("builds_on", "seq2seq", "replaces recurrence with attention in the encoder-decoder"),
        Relation("alternative_to", "lstm", "attention over all positions in parallel instead of a recurrent state"),
    ],
    config=Config, build=Transformer, objective=objective, task="translation",
    train=Train(epochs=3, batch_size=128, lr=2e-3, schedule="inverse_sqrt", warmup=300, grad_clip=1.0),
    data=Data("dates"),
    bar=Bar("exact_match", 0.98, "max", 180),
    forms=[Form(task="sequence", config=SequenceConfig, build=SequenceEncoder, objective=SequenceObjective,
                train=Train(epochs=2, batch_size=64, lr=1e-3, warmup=100, grad_clip=1.0), data=Data("adding-50"),
                metric="mse")],
))
