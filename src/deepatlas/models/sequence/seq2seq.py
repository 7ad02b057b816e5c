"""Sequence to sequence: an RNN encoder-decoder, with optional additive attention.

I. Sutskever, O. Vinyals, Q. V. Le, 2014. "Sequence to Sequence Learning with Neural Networks."
arXiv:1409.3215. D. Bahdanau, K. Cho, Y. Bengio, 2014. "Neural Machine Translation by Jointly
Learning to Align and Translate." arXiv:1409.0473.

An encoder RNN reads the source x_1..x_S; a decoder RNN, started from the encoder's summary of it,
is a conditional language model of the target: p(y) = Π_i p(y_i | y_<i, x). Training feeds the
true previous token (teacher forcing); decoding feeds the model's own outputs, greedily or with
a beam of the `beam` best partial hypotheses. Sutskever et al. squeeze the whole source into the
encoder's final state (and found that reading the source reversed helps: `reverse_source`).
Bahdanau et al. instead let every decoder step look back at all encoder states h_j, weighted by
an alignment a_ij learned jointly (the additive attention):

    e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j),   a_ij = softmax_j(e_ij),   c_i = Σ_j a_ij h_j
    s_i = RNN(s_{i-1}, [E y_{i-1}; c_i]),       p(y_i | ·) = softmax(W_o maxout(U_o s_i + V_o E y_{i-1} + C_o c_i))

h_j = [h→_j; h←_j] comes from a bidirectional encoder (`bidirectional`); padded source positions
get e_ij = -inf, so exactly zero weight. The decoder starts from s_0 = tanh(W_s [h→_S; h←_1]) (the
bridge of Bahdanau et al.'s appendix; Sutskever et al. copy the last encoder state, which this
generalizes to encoders of another width). Each direction reads only a sequence's real tokens (the
backward one reads them reversed, in place), so outputs do not depend on how much padding follows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from deepatlas.catalog import Bar, Data, Entry, NonNegative, Paper, Probability, Relation, Size, Train, register
from deepatlas.models.sequence.gru import GRU_CELL
from deepatlas.models.sequence.lstm import LSTM_CELL
from deepatlas.nn.recurrent import Recurrent
from deepatlas.tasks.translation import BOS, EOS, PAD, Translation

CELLS = {"lstm": LSTM_CELL, "gru": GRU_CELL}  # Config.cell -> the cell's equations, in lstm.py and gru.py


@dataclass
class Config:
    src_vocab: Size = 64
    """source vocabulary size, special tokens included (set from the data)"""
    tgt_vocab: Size = 16
    """target vocabulary size, special tokens included (set from the data)"""
    cell: Literal["lstm", "gru"] = "gru"
    """recurrent cell of encoder and decoder (Sutskever et al.: LSTM; Bahdanau et al.: gated units like the GRU)"""
    embed: Size = 32
    """token embedding size (source and target)"""
    hidden: Size = 64
    """hidden units per direction and layer"""
    layers: Size = 1
    """stacked recurrent layers in the encoder and in the decoder"""
    bidirectional: bool = True
    """encoder reads the source both ways and concatenates the two states (Bahdanau et al.)"""
    attention: bool = True
    """additive attention over the encoder states (Bahdanau et al.); false: the final state only (Sutskever et al.)"""
    attention_size: Size = 32
    """width of the additive attention's hidden layer (n' in Bahdanau et al.)"""
    readout: Size = 64
    """maxout units of the deep output layer before the softmax"""
    reverse_source: bool = False
    """read the source reversed (Sutskever et al.'s trick without attention; bidirectional: swaps the halves)"""
    dropout: Probability = 0.0
    """dropout on embeddings, between recurrent layers and before the readout"""
    beam: Size = 3
    """default beam width for predict (1: greedy); validation always decodes greedily"""
    length_penalty: NonNegative = 0.0
    """beam search ranks the finished hypotheses by log p / length^α with this α (0: raw log p, favours short ones)"""


def flip_each(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row's first `lengths[b]` steps in place, leaving its padding where it is: x (B, S, F)."""
    t = torch.arange(x.shape[1], device=x.device)[None]                   # (1, S)
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)  # (B, S)
    return x.gather(1, index[..., None].expand_as(x))


class Encoder(nn.Module):
    """Source ids (B, S) -> states h_j (B, S, M), a summary (B, M) and the mask of real tokens (B, S)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.embed = nn.Embedding(cfg.src_vocab, cfg.embed, padding_idx=PAD)
        self.drop = nn.Dropout(cfg.dropout)
        self.reverse = cfg.reverse_source
        self.forward_rnn = Recurrent(CELLS[cfg.cell], cfg.embed, cfg.hidden, cfg.layers, dropout=cfg.dropout)
        self.backward_rnn = (Recurrent(CELLS[cfg.cell], cfg.embed, cfg.hidden, cfg.layers, dropout=cfg.dropout)
                             if cfg.bidirectional else None)

    def read(self, rnn: nn.Module, x: Tensor, lengths: Tensor, backwards: bool) -> tuple[Tensor, Tensor]:
        """One direction: outputs in source order (B, S, H) and the state after its last real token (B, H)."""
        if backwards:
            x = flip_each(x, lengths)
        out, _ = rnn(x)                                                     # (B, S, H); causal, so padding
        final = out[torch.arange(out.shape[0], device=out.device), lengths - 1]  # after the end changes nothing
        return (flip_each(out, lengths) if backwards else out), final

    def forward(self, src: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mask = src != PAD                                                   # (B, S)
        lengths = mask.sum(1).clamp(min=1)
        x = self.drop(self.embed(src))                                      # (B, S, E)
        out, final = self.read(self.forward_rnn, x, lengths, backwards=self.reverse)
        if self.backward_rnn is not None:
            out_b, final_b = self.read(self.backward_rnn, x, lengths, backwards=not self.reverse)
            out, final = torch.cat([out, out_b], -1), torch.cat([final, final_b], -1)  # (B, S, 2H), (B, 2H)
        return out, final, mask


class Decoder(nn.Module):
    """A conditional language model of the target, attending over the encoder states if `attention`."""

    def __init__(self, cfg: Config, memory: int):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.tgt_vocab, cfg.embed, padding_idx=PAD)
        self.drop = nn.Dropout(cfg.dropout)
        n_states = cfg.layers * (2 if cfg.cell == "lstm" else 1)           # (h, c) per layer for an LSTM
        self.bridge = nn.Linear(memory, n_states * cfg.hidden)              # W_s
        context = memory if cfg.attention else 0
        self.rnn = Recurrent(CELLS[cfg.cell], cfg.embed + context, cfg.hidden, cfg.layers, dropout=cfg.dropout)
        if cfg.attention:
            self.W_a = nn.Linear(cfg.hidden, cfg.attention_size, bias=False)
            self.U_a = nn.Linear(memory, cfg.attention_size)
            self.v_a = nn.Linear(cfg.attention_size, 1, bias=False)
        self.maxout = nn.Linear(cfg.hidden + cfg.embed + context, 2 * cfg.readout)  # U_o, V_o, C_o in one
        self.out = nn.Linear(cfg.readout, cfg.tgt_vocab)                    # W_o

    def initial_state(self, summary: Tensor):
        """s_0 = tanh(W_s summary) per layer, (layers, B, H); an LSTM's cell state starts as W_s' summary."""
        s = self.bridge(summary).unflatten(-1, (-1, self.cfg.hidden)).transpose(0, 1).contiguous()  # (n, B, H)
        if self.cfg.cell == "lstm":
            h, c = s.chunk(2, 0)
            return h.tanh().contiguous(), c.contiguous()
        return s.tanh()

    def keys(self, memory: Tensor) -> Tensor | None:
        """U_a h_j for every source position, computed once per sentence: (B, S, A)."""
        return self.U_a(memory) if self.cfg.attention else None

    def attend(self, s: Tensor, memory: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Additive attention of query s (N, H) over memory (N, S, M): context (N, M), weights (N, S)."""
        e = self.v_a(torch.tanh(keys + self.W_a(s)[:, None])).squeeze(-1)  # (N, S) alignment scores e_ij
        a = e.masked_fill(~mask, float("-inf")).softmax(-1)                 # (N, S); exactly 0 on padding
        return torch.bmm(a[:, None], memory).squeeze(1), a                  # (N, 1, S) @ (N, S, M) -> (N, M)

    def readout(self, s: Tensor, e: Tensor, c: Tensor | None) -> Tensor:
        """Deep output: W_o maxout(U_o s_i + V_o E y_{i-1} + C_o c_i), logits (..., V)."""
        t = self.maxout(self.drop(torch.cat([s, e] + ([c] if c is not None else []), -1)))  # (..., 2R)
        return self.out(t.unflatten(-1, (-1, 2)).amax(-1))                 # max over pairs: (..., R) -> (..., V)

    @staticmethod
    def top(state) -> Tensor:
        """The top layer's hidden state (N, H): the attention's query s_{i-1}."""
        return (state[0] if isinstance(state, tuple) else state)[-1]

    def step(self, y_prev: Tensor, state, memory: Tensor, keys: Tensor | None, mask: Tensor):
        """One decoder step from the previous tokens (N,): (logits (N, V), new state, weights (N, S) or None)."""
        e = self.drop(self.embed(y_prev))                                   # (N, E)
        c = a = None
        if self.cfg.attention:
            c, a = self.attend(self.top(state), memory, keys, mask)         # c_i from s_{i-1}
        out, state = self.rnn(torch.cat([e, c], -1)[:, None] if c is not None else e[:, None], state)
        return self.readout(out[:, 0], e, c), state, a

    def forward(self, tgt_in: Tensor, state, memory: Tensor, mask: Tensor) -> Tensor:
        """Teacher forcing: logits (B, T, V) for the next token after each of tgt_in (B, T)."""
        if not self.cfg.attention:  # nothing depends on s_{i-1} but the RNN itself: one call over all steps
            e = self.drop(self.embed(tgt_in))                               # (B, T, E)
            out, _ = self.rnn(e, state)                                     # (B, T, H)
            return self.readout(out, e, None)
        keys, logits = self.keys(memory), []
        for i in range(tgt_in.shape[1]):  # c_i needs s_{i-1}: step by step
            step_logits, state, _ = self.step(tgt_in[:, i], state, memory, keys, mask)
            logits.append(step_logits)
        return torch.stack(logits, 1)                                       # (B, T, V)


class Seq2Seq(nn.Module):
    """Encoder + decoder with the Translation contract: forward (teacher forcing) and decode (free-running)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.beam = cfg.beam
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg, cfg.hidden * (2 if cfg.bidirectional else 1))

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """src (B, S), tgt_in (B, T) = BOS + target[:-1] -> logits (B, T, V)."""
        memory, summary, mask = self.encoder(src)
        return self.decoder(tgt_in, self.decoder.initial_state(summary), memory, mask)

    def decode(self, src: Tensor, max_len: int, beam: int = 1) -> tuple[Tensor, Tensor | None]:
        """Free-running decoding: tokens (B, T') ending in EOS then PAD, attention (B, T', S) or None."""
        return self.greedy(src, max_len) if beam <= 1 else self.beam_search(src, max_len, beam)

    def _next_logp(self, logits: Tensor) -> Tensor:
        """Log-probabilities of the next token; PAD and BOS are never outputs."""
        return logits.index_fill(-1, torch.tensor([PAD, BOS], device=logits.device), float("-inf")).log_softmax(-1)

    @torch.no_grad()
    def greedy(self, src: Tensor, max_len: int) -> tuple[Tensor, Tensor | None]:
        """Feed back the most probable token at every step, all sentences at once, until each has said EOS."""
        memory, summary, mask = self.encoder(src)
        state, keys = self.decoder.initial_state(summary), self.decoder.keys(memory)
        y = torch.full((len(src),), BOS, dtype=torch.long, device=src.device)
        done = torch.zeros(len(src), dtype=torch.bool, device=src.device)
        tokens, weights = [], []
        for _ in range(max_len):
            logits, state, a = self.decoder.step(y, state, memory, keys, mask)
            y = self._next_logp(logits).argmax(-1).masked_fill(done, PAD)   # (B,); PAD once finished
            tokens.append(y)
            if a is not None:
                weights.append(a.masked_fill(done[:, None], 0.0))
            done = done | (y == EOS)
            if done.all():
                break
        return torch.stack(tokens, 1), (torch.stack(weights, 1) if weights else None)

    @torch.no_grad()
    def beam_search(self, src: Tensor, max_len: int, width: int) -> tuple[Tensor, Tensor | None]:
        """The best of `width` beam hypotheses by log p / length^length_penalty: tokens (B, T'), attention or None."""
        tokens, log_p, lengths, weights = self.hypotheses(src, max_len, width)
        best = (log_p / lengths.clamp(min=1) ** self.cfg.length_penalty).argmax(-1)  # (B,)
        pick = torch.arange(len(src), device=src.device)
        return tokens[pick, best], (weights[pick, best] if weights is not None else None)

    @torch.no_grad()
    def hypotheses(self, src: Tensor, max_len: int, width: int):
        """Beam search: keep the `width` most probable partial outputs of every sentence, all sentences and
        beams at once. Returns tokens (B, K, T'), their log p (B, K), lengths with EOS (B, K), attention
        (B, K, T', S) or None."""
        B, K, V = len(src), width, self.cfg.tgt_vocab
        memory, summary, mask = self.encoder(src)
        state = self.decoder.initial_state(summary)
        memory, mask = memory.repeat_interleave(K, 0), mask.repeat_interleave(K, 0)   # (B·K, S, M), (B·K, S)
        keys = self.decoder.keys(memory)
        grow = lambda s: s.repeat_interleave(K, 1)                          # (layers, B, H) -> (layers, B·K, H)
        state = tuple(map(grow, state)) if isinstance(state, tuple) else grow(state)
        device = src.device
        # log p of each hypothesis; only the first beam is alive at the start, so no duplicates
        log_p = torch.full((B, K), float("-inf"), device=device)
        log_p[:, 0] = 0.0
        done = torch.zeros(B, K, dtype=torch.bool, device=device)
        lengths = torch.zeros(B, K, device=device)
        tokens = torch.zeros(B, K, 0, dtype=torch.long, device=device)
        weights = torch.zeros(B, K, 0, memory.shape[1], device=device) if self.cfg.attention else None
        finished_row = torch.full((V,), float("-inf"), device=device)
        finished_row[PAD] = 0.0                                             # a finished hypothesis only pads, free
        y = torch.full((B * K,), BOS, dtype=torch.long, device=device)
        for _ in range(max_len):
            logits, state, a = self.decoder.step(y, state, memory, keys, mask)
            step_logp = torch.where(done[..., None], finished_row, self._next_logp(logits).view(B, K, V))
            log_p, flat = (log_p[..., None] + step_logp).view(B, K * V).topk(K, -1)  # (B, K) best continuations
            parent, y = flat // V, flat % V                                 # (B, K) which beam, which token
            was_done = done.gather(1, parent)
            lengths = lengths.gather(1, parent) + (~was_done).float()
            done = was_done | (y == EOS)
            tokens = torch.cat([tokens.gather(1, parent[..., None].expand(-1, -1, tokens.shape[2])), y[..., None]], 2)
            if weights is not None:
                a = a.view(B, K, -1).gather(1, parent[..., None].expand(-1, -1, a.shape[-1]))  # (B, K, S)
                a = a.masked_fill(was_done[..., None], 0.0)
                weights = torch.cat([weights.gather(1, parent[..., None, None].expand_as(weights)), a[:, :, None]], 2)
            rows = (torch.arange(B, device=device)[:, None] * K + parent).flatten()  # (B·K) parent rows
            state = tuple(s[:, rows] for s in state) if isinstance(state, tuple) else state[:, rows]
            y = y.flatten()
            if done.all():
                break
        return tokens, log_p, lengths, weights


register(Entry(
    name="seq2seq", title="Sequence to sequence (RNN encoder-decoder) with attention", family="sequence",
    year=2014,
    paper=Paper("I. Sutskever, O. Vinyals, Q. V. Le", "Sequence to Sequence Learning with Neural Networks "
                "(attention: D. Bahdanau, K. Cho, Y. Bengio, Neural Machine Translation by Jointly Learning "
                "to Align and Translate, arXiv:1409.0473)", "arXiv:1409.3215"),
    summary="An encoder RNN reads the source, a decoder RNN writes the target token by token; additive "
            "attention lets each output step look back at every source position.",
    when_to_use="Mapping a sequence to another of a different length (translation, normalization of "
                "dates/addresses, transliteration, summarizing short texts) on modest data and compute; "
                "its attention maps show which source positions each output used.",
    when_not="Large data and long sequences, where the transformer trains faster in parallel and scales "
             "better; outputs aligned one-to-one with the input (tag with an RNN or TCN instead).",
    relations=[
        Relation("builds_on", "rnn", "an encoder RNN and a decoder RNN with additive attention between them"),
        Relation("uses", "gru", "gated recurrent cells in its encoder and decoder"),
    ],
    config=Config, build=Seq2Seq, objective=Translation, task="translation",
    train=Train(epochs=3, batch_size=64, lr=3e-3, grad_clip=1.0),
    data=Data("dates"),
    bar=Bar("exact_match", 0.97, "max", 180),
))
