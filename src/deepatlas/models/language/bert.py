"""BERT: bidirectional encoder representations from transformers.

J. Devlin, M.-W. Chang, K. Lee, K. Toutanova, 2018. "BERT: Pre-training of Deep Bidirectional
Transformers for Language Understanding." arXiv:1810.04805.

A transformer encoder (post-norm blocks, GELU) reads a whole sequence at once, so every position
sees both its left and its right context. Since a bidirectional model could trivially read the
word it must predict, it is pre-trained as a masked language model (MLM): 15% of the positions
are selected at random and the model predicts their original tokens from the corrupted input.
Of the selected positions, 80% are replaced by [MASK], 10% by a random token and 10% are left
unchanged, so the model cannot rely on seeing [MASK] and must keep a good representation of
every input token. The input is one or two segments, [CLS] A [SEP] B [SEP], each token's
embedding the sum of its token, learned position and segment (A = 0, B = 1) embeddings; a
second pre-training task, next-sentence prediction (NSP), classifies from [CLS] whether B really
follows A (50%) or is a random segment. Fine-tuning puts a classifier on the final [CLS] vector
(through the pooler, a tanh dense layer) and trains the whole network on the labelled task.

    h_0 = LN(E_tok[x] + E_pos[0..S-1] + E_seg[s])
    h_l = LN(a_l + FFN(a_l)),   a_l = LN(h_{l-1} + MSA(h_{l-1}))                 l = 1..L (post-norm)
    MLM:  p(x_i | x~) = softmax(LN(GELU(W h_L,i + b)) E_tok^T + c)   at the selected positions i only
    NSP and classification:  softmax(W_c tanh(W_p h_L,[CLS] + b_p) + b_c)
    L_pretrain = L_MLM + L_NSP
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from deepatlas.catalog import (Bar, Count, Data, Entry, MAX_SIZE, Paper, Positive, Probability, Range, Relation,
                              Size, Train, register)
from deepatlas.data.text import CLS, MASK, PAD, SEP, SPECIALS
from deepatlas.errors import DeepAtlasError
from deepatlas.models.language.transformer import Block, padding_mask
from deepatlas.tasks import Objective

N_SPECIAL = len(SPECIALS)  # ids below are PAD, UNK, MASK, CLS, SEP in every vocabulary: never selected or drawn


@dataclass
class Config:
    vocab_size: Annotated[int, Range(N_SPECIAL + 1, MAX_SIZE)] = 128
    """token vocabulary V, special tokens included (set from the data)"""
    block_size: Size = 16
    """tokens per text window or sentence T (set from the data); positions hold T + 3 for [CLS] A [SEP] B [SEP]"""
    n_classes: Size = 2
    """classes of the fine-tuning task (set from labelled data)"""
    dim: Size = 96
    """hidden width H"""
    layers: Count = 4
    """encoder blocks L"""
    heads: Size = 4
    """attention heads per block (dim must be divisible by heads)"""
    mlp_ratio: Positive = 4.0
    """hidden width of each block's feed-forward layer, as a multiple of dim (4 in BERT)"""
    dropout: Probability = 0.0
    """dropout on embeddings, attention, sublayer outputs and the classifier input (BERT: 0.1; short runs: 0)"""
    init_std: Positive = 0.02
    """std of the truncated-normal initial weights (BERT: 0.02, for width 768; ~0.5/sqrt(dim) learns sooner)"""
    mask_prob: Probability = 0.15
    """fraction of the (non-special) positions selected for the masked-LM loss"""
    next_sentence: bool = True
    """pre-train with next-sentence prediction too: segment B is a random other window in half the examples"""
    pretrain_steps: Count = 500
    """labelled data: masked-LM steps on the training sentences before fine-tuning the classifier"""

    def __post_init__(self):
        if self.dim % self.heads:
            raise DeepAtlasError(f"bert: dim {self.dim} must be divisible by heads {self.heads}")


# ---- inputs: specials, segments and masking ---------------------------------------------------------

def single(x: Tensor) -> tuple[Tensor, Tensor]:
    """One right-padded sentence per row, x (B, T) -> ([CLS] x [SEP] PAD.., segment ids 0) (B, T' + 2),
    trimmed to the longest sentence T'."""
    lengths = (x != PAD).sum(1)                                              # (B,)
    if not torch.onnx.is_in_onnx_export():  # an exported model keeps every column: the trim would be its trace's
        x = x[:, : max(int(lengths.max()), 1)]
    tokens = torch.cat([torch.full_like(x[:, :1], CLS), x, torch.full_like(x[:, :1], PAD)], 1)  # (B, T' + 2)
    tokens = tokens.scatter(1, (lengths + 1)[:, None], SEP)                  # [SEP] right after the sentence
    return tokens, torch.zeros_like(tokens)


def pair(x: Tensor, b: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """A text window x (B, T) cut in two halves A | B -> ([CLS] A [SEP] B [SEP], segment ids 0.. 1..) (B, T + 3).
    `b` (B, T - T//2) replaces the second half (a random "next sentence")."""
    B, T = x.shape
    a, b = x[:, : T // 2], (x[:, T // 2:] if b is None else b)
    cls = torch.full((B, 1), CLS, device=x.device)
    sep = torch.full((B, 1), SEP, device=x.device)
    tokens = torch.cat([cls, a, sep, b, sep], 1)                             # (B, T + 3)
    segments = (torch.arange(T + 3, device=x.device) >= T // 2 + 2).long().expand(B, -1)  # A and its [SEP]: 0
    return tokens, segments


def mask_tokens(tokens: Tensor, vocab_size: int, prob: float = 0.15,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """BERT's corruption: select `prob` of the non-special positions; of those 80% -> [MASK], 10% -> a random
    token, 10% unchanged. Returns (corrupted tokens, selected) (B, S), selected bool."""
    u = torch.rand(tokens.shape, device=tokens.device, generator=generator)
    action = torch.rand(tokens.shape, device=tokens.device, generator=generator)
    random_ids = torch.randint(N_SPECIAL, vocab_size, tokens.shape, device=tokens.device, generator=generator)
    selected = (u < prob) & (tokens >= N_SPECIAL)                            # never PAD, [CLS], [SEP], ...
    out = torch.where(selected & (action < 0.8), MASK, tokens)                       # 80%: [MASK]
    out = torch.where(selected & (action >= 0.8) & (action < 0.9), random_ids, out)  # 10%: random; 10%: as is
    return out, selected


# ---- the network --------------------------------------------------------------------------------

class BERT(nn.Module):
    """Encoder with an MLM head (tied to the token embeddings), an NSP head and a sequence classifier.

    forward(x) classifies right-padded sentences x (B, T) -> scores (B, n_classes)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.tok_embed = nn.Embedding(cfg.vocab_size, cfg.dim)                # E_tok (V, H)
        self.pos_embed = nn.Embedding(cfg.block_size + 3, cfg.dim)            # E_pos, learned
        self.seg_embed = nn.Embedding(2, cfg.dim)                             # E_seg: A, B
        self.embed_norm = nn.LayerNorm(cfg.dim, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout, norm_first=False,
                                          activation="gelu", eps=1e-12) for _ in range(cfg.layers))
        # masked-LM head: transform, then decode with the token embeddings plus a bias per token
        self.mlm_transform = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.GELU(), nn.LayerNorm(cfg.dim, eps=1e-12))
        self.mlm_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        # [CLS] heads: pooler, then next-sentence and task classifiers
        self.pooler = nn.Linear(cfg.dim, cfg.dim)
        self.nsp = nn.Linear(cfg.dim, 2)
        self.classifier = nn.Linear(cfg.dim, cfg.n_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT's init: truncated normal weights of std `init_std` (cut at 2 std), zero biases, unit layer norms."""
        std = self.cfg.init_std
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def encode(self, tokens: Tensor, segments: Tensor, keep: Tensor | None = None) -> Tensor:
        """tokens, segments (B, S); keep (B, S) bool, True at real tokens (default: not PAD) -> h_L (B, S, H)."""
        keep = tokens != PAD if keep is None else keep
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        h = self.tok_embed(tokens) + self.pos_embed(pos) + self.seg_embed(segments)  # (B, S, H)
        h = self.drop(self.embed_norm(h))
        mask = padding_mask(keep)                                             # (B, 1, 1, S): no one attends to PAD
        for block in self.blocks:
            h = block(h, mask=mask)                                           # (B, S, H), every position sees all
        return h

    def mlm_logits(self, h: Tensor) -> Tensor:
        """Hidden states (..., H) -> token logits (..., V), decoded with the tied token embeddings."""
        return self.mlm_transform(h) @ self.tok_embed.weight.T + self.mlm_bias  # (..., H) @ (H, V)

    def pooled(self, h: Tensor) -> Tensor:
        """The pooler: tanh(W_p h_[CLS] + b_p), (B, S, H) -> (B, H)."""
        return torch.tanh(self.pooler(h[:, 0]))

    def forward(self, x: Tensor) -> Tensor:
        tokens, segments = single(x)                                          # (B, S)
        return self.classifier(self.drop(self.pooled(self.encode(tokens, segments))))  # (B, K)


# ---- the objective: pre-training and fine-tuning ------------------------------------------------

class BertObjective(Objective):
    """Masked-LM (+ NSP) on text windows (x, y, baseline); on labelled sentences (x, label), `pretrain_steps`
    of masked-LM on the sentences, then classification. Logs for MLM: loss, masked_accuracy and
    baseline_accuracy (the most frequent training token, guessed at the same positions), next_sentence_accuracy,
    and through `summarize` masked_vs_baseline; for classification: loss and accuracy."""

    metric = "masked_vs_baseline"

    def __init__(self, model: BERT):
        super().__init__(model)
        self.register_buffer("frequent", torch.tensor(N_SPECIAL))  # id of the most frequent training token
        self.register_buffer("steps", torch.tensor(0))             # training steps taken (pre-training phase)

    def prepare(self, data) -> Dataset | None:
        """The most frequent non-special token of the training split (the masked-token baseline)."""
        counts = torch.zeros(self.model.cfg.vocab_size, dtype=torch.long)
        for batch in DataLoader(data.train, batch_size=1024):
            counts += torch.bincount(batch[0].flatten(), minlength=len(counts))
        counts[:N_SPECIAL] = 0
        self.frequent.fill_(int(counts.argmax()))
        return None

    def _generator(self, tokens: Tensor) -> torch.Generator | None:
        """Training draws fresh masks from the global RNG; evaluation masks each batch the same way every time."""
        if self.training:
            return None
        return torch.Generator(device=tokens.device).manual_seed(int(tokens.sum()))

    def masked_lm(self, x: Tensor, pairs: bool) -> dict[str, Tensor]:
        g = self._generator(x)
        is_next = None
        if pairs and self.model.cfg.next_sentence:
            B, T = x.shape
            is_next = torch.rand(B, device=x.device, generator=g) < 0.5      # (B,) B follows A, or not
            other = x[:, T // 2:].roll(1, 0)                                 # another window's second half
            tokens, segments = pair(x, torch.where(is_next[:, None], x[:, T // 2:], other))
        elif pairs:
            tokens, segments = pair(x)
        else:
            tokens, segments = single(x)
        inputs, selected = mask_tokens(tokens, self.model.cfg.vocab_size, self.model.cfg.mask_prob, g)
        h = self.model.encode(inputs, segments, keep=tokens != PAD)          # (B, S, H)
        logits = self.model.mlm_logits(h[selected])                          # (N, V): selected positions only
        target = tokens[selected]                                            # (N,)
        n = selected.sum()
        loss = F.cross_entropy(logits, target, reduction="sum") / n.clamp(min=1)
        logs = {"loss": loss, "loss#n": n,
                "masked_accuracy": (logits.argmax(-1) == target).float().sum() / n.clamp(min=1),
                "masked_accuracy#n": n,
                "baseline_accuracy": (target == self.frequent).float().sum() / n.clamp(min=1),
                "baseline_accuracy#n": n}
        if is_next is not None:
            nsp = self.model.nsp(self.model.pooled(h))                       # (B, 2)
            label = is_next.long()
            logs["loss"] = loss + F.cross_entropy(nsp, label)                # L_MLM + L_NSP
            logs["next_sentence_accuracy"] = (nsp.argmax(-1) == label).float().mean()
        return logs

    def measure(self, batch) -> dict[str, Tensor]:
        if len(batch) == 3:                                                  # text windows (x, y, baseline)
            return self.masked_lm(batch[0], pairs=True)
        x, label = batch                                                     # labelled sentences
        if self.training and int(self.steps) < self.model.cfg.pretrain_steps:
            return self.masked_lm(x, pairs=False)
        scores = self.model(x)                                               # (B, K)
        return {"loss": F.cross_entropy(scores, label), "accuracy": (scores.argmax(-1) == label).float().mean()}

    def training_step(self, batch) -> tuple[Tensor, dict[str, Tensor]]:
        out = super().training_step(batch)
        self.steps += 1                                                      # counts towards pretrain_steps
        return out

    def summarize(self, means: dict[str, float]) -> dict[str, float]:
        if "masked_accuracy" in means:
            means["masked_vs_baseline"] = means["masked_accuracy"] / max(means["baseline_accuracy"], 1e-12)
        return means

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Class probabilities (B, K) of right-padded sentences x (B, T)."""
        return self.model(x).softmax(-1)

    def infer(self, x: Tensor) -> Tensor:
        """A fine-tuned run's class scores (B, K); a pre-trained one's masked-LM logits at every position of
        [CLS] x [SEP] (B, T + 2, V)."""
        if "classes" in self.data_spec:
            return self.model(x)
        return self.model.mlm_logits(self.model.encode(*single(x)))


register(Entry(
    name="bert", title="BERT (bidirectional transformer encoder, masked-LM pre-training)", family="language",
    year=2018,
    paper=Paper("J. Devlin, M.-W. Chang, K. Lee, K. Toutanova",
                "BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding",
                "arXiv:1810.04805"),
    summary="A transformer encoder that sees the whole input at once, pre-trained to fill in masked tokens "
            "(and to tell whether two segments follow each other), then fine-tuned with a classifier on [CLS].",
    when_to_use="Understanding tasks on a whole input: classifying sentences or pairs, tagging tokens, "
                "extractive question answering, embeddings for search; fine-tuning a pre-trained encoder "
                "on little labelled data.",
    when_not="Generating text (it has no left-to-right factorization: use GPT or an encoder-decoder); "
             "very long inputs (attention is quadratic in length); tiny problems a bag of words solves.",
    relations=[
        Relation("uses", "transformer", "a Transformer encoder"),
        Relation("alternative_to", "gpt", "bidirectional masked-language-model pre-training instead of left-to-right"),
    ],
    config=Config, build=BERT, objective=BertObjective, task="language_model",
    # characters in short windows (two segments of 8): learned positions train much faster than for 128;
    # 2,000 steps. Topics: words (a sentence is ~8 tokens), 500 masked-LM steps, then 1,500 fine-tuning steps.
    train=Train(epochs=1, steps=2000, batch_size=32, lr=1e-3, warmup=50, schedule="cosine", grad_clip=1.0),
    data=Data("stdlib-text", tokens="char", window=16),
    bar=Bar("masked_vs_baseline", 2.0, "max", 240),
    more_bars=[Bar("accuracy", 0.9, "max", 240, overrides={"data": "planted-topics", "tokens": "word", "window": "0",
                                                          "epochs": "2"})],
))
