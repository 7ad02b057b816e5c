"""ELMo: deep contextualized word representations from a character-aware bidirectional LSTM language model.

M. E. Peters, M. Neumann, M. Iyyer, M. Gardner, C. Clark, K. Lee, L. Zettlemoyer, 2018. "Deep
contextualized word representations." NAACL 2018, arXiv:1802.05365. The token encoder is the
character CNN of Y. Kim, Y. Jernite, D. Sontag, A. M. Rush, 2016. "Character-Aware Neural Language
Models." arXiv:1508.06615, as used by R. Jozefowicz et al., 2016. "Exploring the Limits of Language
Modeling." arXiv:1602.02410.

A biLM is two language models over the same tokens t_1..t_N that share their token encoder and
their softmax: a forward one reads left to right, a backward one right to left. Training maximizes

    Σ_k  log p(t_k | t_1..t_{k-1}; Θ_x, Θ→_LSTM, Θ_s)  +  log p(t_k | t_{k+1}..t_N; Θ_x, Θ←_LSTM, Θ_s)

Each token is spelled as UTF-8 bytes between begin- and end-of-word markers, padded (or cut) to
`max_chars`; the bytes are embedded, convolved with filters of several widths, max-pooled over the
characters, passed through highway layers and projected:  x_k = P · highway(max_t conv(E c_k)).
So a word never seen in training still has a representation built from its spelling. Two LSTM
layers per direction sit on x_k, the second with a residual connection, h_2 = LSTM_2(h_1) + h_1.

ELMo is then a task-specific weighting of all L + 1 = 3 layers of the frozen biLM, at every token k:

    h_{k,0} = [x_k; x_k],   h_{k,j} = [h→_{k,j}; h←_{k,j}]          (each (2H,), j = 1..L)
    ELMo_k  = γ Σ_{j=0}^{L} s_j h_{k,j},     s = softmax(w)        (w (L+1,) and γ learned by the task)

so a downstream task chooses how much of the lower layers (syntax, word identity) and the upper
ones (context, word sense) it wants; `ELMoClassifier` is such a head.

Trained for minutes rather than weeks, the char-CNN needs two things the paper's run did not: its output
is standardized over the vocabulary at the start (`CharCNN.standardize`, a data-dependent initialization),
and it learns 10x slower than the LSTMs (`encoder_lr`), so that the LSTMs are not chasing moving inputs.
The LSTMs have no cell projection (the paper's 4096 cells project to 512); H = dim throughout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from deepatlas.catalog import (Bar, Count, Data, Entry, MAX_SIZE, Paper, Positive, Probability, Range, Relation,
                              Size, Train, register)
from deepatlas.data.text import PAD
from deepatlas.errors import DeepAtlasError
from deepatlas.models.sequence.lstm import LSTM_CELL
from deepatlas.nn.recurrent import Recurrent
from deepatlas.tasks import Objective
from deepatlas.tasks.language import sample_next, token_means, with_ratios

# character ids of a spelling: 0 pads, 1 and 2 mark the word's start and end, byte b is b + 3
CHAR_PAD, BOW, EOW, N_CHARS = 0, 1, 2, 259


@dataclass
class Config:
    vocab_size: Size = 1005
    """words in the vocabulary, specials included (set from the data)"""
    block_size: Size = 32
    """tokens of context per training window (set from the data; the LSTMs themselves take any length)"""
    max_chars: Annotated[int, Range(2, MAX_SIZE)] = 16
    """characters per spelled word, markers included; longer words are cut (the paper: 50)"""
    char_dim: Size = 16
    """character embedding size"""
    widths: Annotated[tuple[int, ...], Range(1, MAX_SIZE)] = (1, 2, 3, 4, 5)
    """convolution filter widths in characters (the paper: 1..7)"""
    filters: Annotated[tuple[int, ...], Range(1, MAX_SIZE)] = (32, 32, 64, 64, 64)
    """filters of each width; their sum is the char-CNN's output width (the paper: 32..1024, 2048 in all)"""
    highway: Count = 2
    """highway layers on the pooled filters"""
    dim: Size = 128
    """token representation and LSTM width H (the paper: 512 after a 4096-unit LSTM's projection)"""
    encoder_lr: Positive = 0.1
    """the char-CNN learns at this multiple of the learning rate (1: as fast as the LSTMs; see `Slowed`)"""
    dropout: Probability = 0.0
    """dropout on the token representations and on every LSTM layer's output"""


def spell(words: list[str], max_chars: int) -> Tensor:
    """Character ids (V, max_chars): BOW, the UTF-8 bytes (cut to max_chars - 2), EOW, then CHAR_PAD."""
    table = torch.full((len(words), max_chars), CHAR_PAD, dtype=torch.long)
    for i, word in enumerate(words):
        chars = [BOW, *(b + 3 for b in word.encode("utf-8")[:max_chars - 2]), EOW]
        table[i, :len(chars)] = torch.tensor(chars)
    return table


class Slowed(nn.Module):
    """Parametrization w = c · v of a weight, v the stored parameter. Adam moves every parameter by about lr
    a step whatever its gradient's scale, so w then learns c times slower (the "equalized learning rate" of
    Karras et al. 2018, here used to slow a module down)."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, v: Tensor) -> Tensor:
        return v * self.c

    def right_inverse(self, w: Tensor) -> Tensor:
        return w / self.c


class Highway(nn.Module):
    """y = g ⊙ relu(W_h x) + (1 - g) ⊙ x,  g = σ(W_g x)  (Srivastava et al. 2015); g starts mostly closed."""

    def __init__(self, width: int):
        super().__init__()
        self.proj = nn.Linear(width, 2 * width)                    # W_h and W_g in one matmul
        nn.init.normal_(self.proj.weight, std=width ** -0.5)       # variance-preserving, as in the paper's code
        nn.init.zeros_(self.proj.bias)
        with torch.no_grad():
            self.proj.bias[width:].fill_(-2.0)                     # g ≈ 0.12: carry x through at first

    def forward(self, x: Tensor) -> Tensor:
        h, g = self.proj(x).chunk(2, -1)                           # (N, C) each
        g = torch.sigmoid(g)
        return g * F.relu(h) + (1 - g) * x


class CharCNN(nn.Module):
    """Spellings (N, max_chars) -> token vectors (N, dim): embed, convolve, max over time, highway, project."""

    def __init__(self, cfg: Config):
        super().__init__()
        if not cfg.widths or len(cfg.widths) != len(cfg.filters) or max(cfg.widths) > cfg.max_chars:
            raise DeepAtlasError("elmo: at least one width, one filter count per width, and no width above max_chars")
        self.embed = nn.Embedding(N_CHARS, cfg.char_dim, padding_idx=CHAR_PAD)
        self.convs = nn.ModuleList(nn.Conv1d(cfg.char_dim, n, w) for w, n in zip(cfg.widths, cfg.filters))
        width = sum(cfg.filters)
        self.highways = nn.Sequential(*(Highway(width) for _ in range(cfg.highway)))
        self.proj = nn.Linear(width, cfg.dim)
        # variance-preserving initialization as in the paper's code: characters U(-1, 1), weights N(0, 1/fan_in)
        nn.init.uniform_(self.embed.weight, -1, 1)
        for conv, w in zip(self.convs, cfg.widths):
            nn.init.normal_(conv.weight, std=(w * cfg.char_dim) ** -0.5)
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.proj.weight, std=width ** -0.5)
        nn.init.zeros_(self.proj.bias)
        # Every word's vector depends on all of these weights, and standardized (below) a small change in them
        # moves every word: learning them at the LSTMs' rate keeps the LSTMs chasing moving inputs (measured:
        # 0.15 nats worse after 1000 steps). So they learn `encoder_lr` times slower.
        for module in list(self.modules()):
            for name, _ in list(module.named_parameters(recurse=False)):
                parametrize.register_parametrization(module, name, Slowed(cfg.encoder_lr))

    @torch.no_grad()
    def standardize(self, spellings: Tensor) -> None:
        """Data-dependent initialization: rescale the projection so that over the vocabulary's spellings
        (V, max_chars) each output feature has mean 0 and standard deviation 1. Max-pooled filters answer much
        alike for every word at first (a large shared component, little spread between words), which keeps
        a language model on them at unigram level for hundreds of steps; standardized, it learns about twice
        as fast."""
        out = self(spellings)                                      # (V, dim)
        std = out.std(0).clamp(min=1e-6)
        self.proj.weight = self.proj.weight / std[:, None]         # stored through Slowed.right_inverse
        self.proj.bias = (self.proj.bias - out.mean(0)) / std

    def forward(self, chars: Tensor) -> Tensor:
        e = self.embed(chars).transpose(1, 2)                      # (N, C_char, max_chars): channels first
        pooled = [F.relu(conv(e)).amax(-1) for conv in self.convs]  # each (N, filters_w): max over positions
        return self.proj(self.highways(torch.cat(pooled, -1)))     # (N, Σ filters) -> (N, dim)


class LSTMStack(nn.Module):
    """One direction's language model: LSTM_1, then LSTM_2 with a residual connection. Reads left to right."""

    def __init__(self, cfg: Config, layers: int = 2):
        super().__init__()
        self.lstms = nn.ModuleList(Recurrent(LSTM_CELL, cfg.dim, cfg.dim, forget_bias=1.0) for _ in range(layers))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, states: list | None = None) -> tuple[list[Tensor], list]:
        """x (B, T, H) -> every layer's outputs [(B, T, H)] * layers, and each layer's final (h, c)."""
        outs, new_states, h = [], [], x
        for j, lstm in enumerate(self.lstms):
            h = self.drop(h) if j > 0 else h                            # dropout between the layers
            out, state = lstm(h, None if states is None else states[j])  # (B, T, H)
            h = out + h if j > 0 else out                               # h_2 = LSTM_2(h_1) + h_1
            outs.append(h)
            new_states.append(state)
        return outs, new_states


class ScalarMix(nn.Module):
    """γ Σ_j softmax(w)_j h_j over the biLM's layers: (L+1, B, T, 2H) -> (B, T, 2H). Learned by each task."""

    def __init__(self, n_layers: int = 3):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n_layers))               # s = softmax(w): an even mix at first
        self.gamma = nn.Parameter(torch.ones(()))                  # γ scales the whole vector to the task

    def weights(self) -> Tensor:
        return self.w.softmax(0)                                   # (L+1,), sums to 1

    def forward(self, layers: Tensor) -> Tensor:
        return self.gamma * torch.einsum("j,jbtc->btc", self.weights(), layers)


class ELMo(nn.Module):
    """The biLM: word ids (B, T) -> (forward logits, backward logits), each (B, T, V).

    forward logits at t predict t_{t+1} from t_1..t_t; backward logits at t predict t_{t-1} from t_t..t_T.
    The spelling of every vocabulary word is the buffer `spelling` (V, max_chars), filled by the objective's
    `prepare` from the data's vocabulary (or by `set_vocab`), so it is saved with the weights.
    """

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("spelling", torch.zeros(cfg.vocab_size, cfg.max_chars, dtype=torch.long))
        self.chars = CharCNN(cfg)                                  # Θ_x, shared by both directions
        self.fwd = LSTMStack(cfg)                                  # Θ→_LSTM
        self.bwd = LSTMStack(cfg)                                  # Θ←_LSTM
        self.drop = nn.Dropout(cfg.dropout)
        self.softmax = nn.Linear(cfg.dim, cfg.vocab_size)          # Θ_s, shared by both directions

    def set_vocab(self, words: list[str]) -> None:
        """Spell the vocabulary (index = word id) into the `spelling` buffer."""
        if len(words) != self.cfg.vocab_size:
            raise DeepAtlasError(f"elmo: the vocabulary has {len(words)} words, the model {self.cfg.vocab_size}")
        self.spelling.copy_(spell(words, self.cfg.max_chars))

    def tokens(self, words: Tensor) -> Tensor:
        """x_k for every token: (B, T) word ids -> (B, T, H), each distinct word encoded once."""
        if torch.onnx.is_in_onnx_export():  # ONNX's Unique loses the shapes: an exported model spells every word
            return self.chars(self.spelling)[words]                # (V, H) -> (B, T, H)
        unique, inverse = torch.unique(words, return_inverse=True)  # (U,), (B, T)
        return self.chars(self.spelling[unique])[inverse]          # (U, max_chars) -> (U, H) -> (B, T, H)

    def directions(self, words: Tensor) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Token vectors (B, T, H) and both directions' layer outputs, each [(B, T, H)] * 2, in text order."""
        x = self.tokens(words)
        x_in = self.drop(x)
        fwd, _ = self.fwd(x_in)                                    # reads t_1 .. t_T
        bwd, _ = self.bwd(x_in.flip(1))                            # reads t_T .. t_1
        return x, fwd, [h.flip(1) for h in bwd]                    # back to text order

    def forward(self, words: Tensor) -> tuple[Tensor, Tensor]:
        _, fwd, bwd = self.directions(words)
        return self.softmax(self.drop(fwd[-1])), self.softmax(self.drop(bwd[-1]))  # (B, T, V) each

    def layers(self, words: Tensor) -> Tensor:
        """The L + 1 = 3 representations h_{k,j} of every token: (3, B, T, 2H); layer 0 is [x_k; x_k]."""
        x, fwd, bwd = self.directions(words)
        return torch.stack([torch.cat([x, x], -1)] + [torch.cat([f, b], -1) for f, b in zip(fwd, bwd)])

    def embed(self, words: Tensor, mix: ScalarMix) -> Tensor:
        """ELMo_k = γ Σ_j s_j h_{k,j} with a task's `mix`: (B, T) -> (B, T, 2H)."""
        return mix(self.layers(words))

    @torch.no_grad()
    def generate(self, idx: Tensor, new_tokens: int, temperature: float = 1.0, top_k: int = 0) -> Tensor:
        """Continue idx (B, T) with the forward LM by sampling: (B, T + new_tokens)."""
        state, x = None, idx
        for _ in range(new_tokens):
            outs, state = self.fwd(self.tokens(x), state)          # the context once, then one token a step
            x = sample_next(self.softmax(outs[-1][:, -1]), temperature, top_k)  # (B, 1)
            idx = torch.cat([idx, x], 1)
        return idx


class ELMoClassifier(nn.Module):
    """A downstream head: the frozen biLM's ELMo vectors, mean-pooled over the words, then a linear layer.

    forward(words (B, T), PAD-right-padded) -> class scores (B, K). Only the mix (w, γ) and the head learn.
    """

    def __init__(self, bilm: ELMo, n_classes: int, pad: int = 0):
        super().__init__()
        self.bilm = bilm.requires_grad_(False)
        self.mix = ScalarMix()
        self.head = nn.Linear(2 * bilm.cfg.dim, n_classes)
        self.pad = pad

    def forward(self, words: Tensor) -> Tensor:
        self.bilm.eval()                                           # frozen: no dropout either
        with torch.no_grad():
            layers = self.bilm.layers(words)                       # (3, B, T, 2H)
        elmo = self.mix(layers)                                    # (B, T, 2H)
        real = (words != self.pad).float()[..., None]              # (B, T, 1)
        pooled = (elmo * real).sum(1) / real.sum(1).clamp(min=1)   # (B, 2H)
        return self.head(pooled)


# ---- the objective: both directions' cross-entropy -------------------------------------------------

class BiLM(Objective):
    """Trains the biLM on (x, y, baseline) windows: loss = ½ (CE→ + CE←).

    The forward LM predicts y_t = x_{t+1} at every t; the backward LM at t predicts x_{t-1}, known in the
    window for t >= 1. Logs cross_entropy (both directions' tokens together), forward_/backward_cross_entropy,
    the data's bigram_cross_entropy, and by `summarize` perplexity and perplexity_vs_bigram = exp(CE - CE_bigram).
    """

    metric = "perplexity_vs_bigram"

    def prepare(self, data) -> None:
        vocab = data.spec.get("vocab")
        if vocab is None or data.spec.get("tokens") not in (None, "word"):
            raise DeepAtlasError("elmo spells whole words: train it on a word view (--set tokens=word)")
        self.model.set_vocab(list(vocab))
        self.model.chars.standardize(self.model.spelling)

    def measure(self, batch) -> dict[str, Tensor]:
        x, y, baseline = batch                                     # (B, T) ids, (B, T) next ids, (B, T) nats
        logits_f, logits_b = self.model(x)                         # (B, T, V) each
        target_b = x[:, :-1]                                       # backward LM at t = 1..T-1 predicts x_{t-1}
        nll_f = F.cross_entropy(logits_f.flatten(0, 1), y.flatten(), reduction="none").view_as(y)  # (B, T)
        nll_b = F.cross_entropy(logits_b[:, 1:].flatten(0, 1), target_b.flatten(), reduction="none").view_as(target_b)
        real_f, real_b = y != PAD, target_b != PAD
        fwd = token_means("forward_cross_entropy", nll_f, real_f)
        bwd = token_means("backward_cross_entropy", nll_b, real_b)
        both = token_means("cross_entropy", torch.cat([nll_f, nll_b], 1), torch.cat([real_f, real_b], 1))
        return {"loss": (fwd["forward_cross_entropy"] + bwd["backward_cross_entropy"]) / 2, **both, **fwd, **bwd,
                **token_means("bigram_cross_entropy", baseline, real_f)}

    def summarize(self, means: dict[str, float]) -> dict[str, float]:
        return with_ratios(means)

    def infer(self, words: Tensor) -> dict[str, Tensor]:
        forward_logits, backward_logits = self.model(words)        # (B, T, V) each
        return {"forward_logits": forward_logits, "backward_logits": backward_logits}


register(Entry(
    name="elmo", title="ELMo (bidirectional LSTM language model, char-CNN tokens)", family="language", year=2018,
    paper=Paper("M. E. Peters, M. Neumann, M. Iyyer, M. Gardner, C. Clark, K. Lee, L. Zettlemoyer",
                "Deep contextualized word representations", "arXiv:1802.05365"),
    summary="Forward and backward LSTM language models over character-CNN word vectors; a word's "
            "representation is a learned, task-specific mix of all the biLM's layers at its position.",
    when_to_use="Contextual word features for a downstream tagger or classifier when data is modest and "
                "the vocabulary open (misspellings, rare and new words are spelled, never UNK); a cheap "
                "recurrent alternative to fine-tuning a transformer.",
    when_not="When a pretrained transformer (BERT, GPT) fits the budget: it is usually more accurate and "
             "trains in parallel; for static word vectors, word2vec/GloVe/fastText are far cheaper.",
    relations=[
        Relation("uses", "lstm", "bidirectional LSTM language models over a character convolution"),
        Relation("builds_on", "word2vec", "a vector per word in its context instead of one per word"),
        Relation("alternative_to", "bert", "contextual vectors from recurrent language models rather than a "
                 "Transformer"),
    ],
    config=Config, build=ELMo, objective=BiLM, task="language_model",
    train=Train(epochs=1, batch_size=32, lr=1.5e-2, grad_clip=1.0, warmup=50),
    data=Data("stdlib-text", tokens="word", vocab=1000),
    bar=Bar("perplexity_vs_bigram", 1.0, "min", 240),
))
