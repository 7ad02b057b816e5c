"""GloVe: global vectors for word representation, fitted to the log co-occurrence counts of a corpus.

J. Pennington, R. Socher, C. D. Manning, 2014. "GloVe: Global Vectors for Word Representation."
EMNLP 2014, pages 1532-1543 (ACL Anthology D14-1162; no arXiv version).

Count-based methods (LSA) use the corpus's global statistics but do poorly on analogies;
prediction-based ones (word2vec) do well on analogies but see the corpus one window at a time.
GloVe does both: it counts once how often word j occurs in the context of word i over the whole
corpus, X_ij (a symmetric window, a pair d words apart adding 1/d), then fits vectors whose dot
products are the logarithms of those counts, so that ratios of co-occurrence probabilities
become differences of vectors, which is what makes analogies linear:

    J = Σ_{i,j: X_ij > 0}  f(X_ij) (w_i · w̃_j + b_i + b̃_j - log X_ij)²                      (8)
    f(x) = (x / x_max)^α  if x < x_max,  else 1          (x_max = 100, α = 3/4)              (9)

f gives rare pairs (noisy counts) little weight and caps the weight of frequent ones; pairs that
never co-occur (X_ij = 0, log undefined) are left out, so training visits only the non-zero
entries. The paper fits (8) with AdaGrad; here the recipe's AdamW, with weight decay, since the
counts of a small corpus leave many of the 2V(D + 1) parameters free.

w and w̃ are two vector sets (word and context) that play symmetric roles, and the paper reports
their sum W + W̃ as the word vectors (`vectors="sum"`). The sum's cosine has cross terms w_i · w̃_j,
which are fitted to log X_ij: it makes a word similar to the words it occurs *next to*, not only
to the words that share its contexts. The default is therefore the release's other full output,
W and W̃ side by side (its `-model 0`, without the biases): the cosine of [w_i; w̃_i] adds the two
context-sharing similarities and has no cross terms (the entry's notes give the measurements).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from deepatlas.catalog import Bar, Data, Entry, NonNegative, Paper, Positive, Relation, Size, Train, register
from deepatlas.data.words import PAD
from deepatlas.tasks.embedding import EmbeddingObjective


@dataclass
class Config:
    vocab_size: Size = 256
    """words in the vocabulary, specials included (set from the data)"""
    dim: Size = 50
    """vector size D of w and w̃ (the paper: 50 to 300)"""
    context: Size = 10
    """symmetric window: words on each side of a word counted as its context in X_ij (the paper: 10)"""
    x_max: Positive = 100.0
    """counts at or above x_max get full weight f = 1 (the paper: 100)"""
    alpha: NonNegative = 0.75
    """exponent α of the weighting f(x) = (x/x_max)^α below x_max (the paper: 3/4)"""
    vectors: Literal["sum", "concat", "word"] = "concat"
    """the word vectors: W + W̃ (the paper), [W; W̃] side by side (2D wide, the release's -model 0) or W alone"""


def weighting(x: Tensor, x_max: float, alpha: float) -> Tensor:
    """f(x) of equation (9): (x/x_max)^α below x_max, 1 from x_max on; f(0) = 0."""
    return (x / x_max).clamp(max=1.0) ** alpha


def cooccurrence(rows: Tensor, vocab_size: int, window: int, pad: int = PAD) -> tuple[Tensor, Tensor, Tensor]:
    """The non-zero entries of the symmetric co-occurrence matrix X of padded sentences rows (N, T).

    Every pair of real tokens (i at position t, j at t + d, 1 ≤ d ≤ window, same row) adds 1/d to
    X_ij and to X_ji. Returns (i (M,) long, j (M,) long, X_ij (M,) float), sorted by i·V + j.
    One pass per offset d, each over all tokens at once; each pass is summed per pair before the next."""
    rows = rows.long()
    keys = torch.zeros(0, dtype=torch.long, device=rows.device)              # (M,) distinct i·V + j so far
    x = torch.zeros(0, device=rows.device)                                   # (M,) their X_ij
    for d in range(1, min(window, rows.shape[1] - 1) + 1):
        left, right = rows[:, :-d], rows[:, d:]                             # (N, T-d): pairs d apart
        real = (left != pad) & (right != pad)
        a, b = left[real], right[real]                                      # (P,)
        new = torch.cat([a * vocab_size + b, b * vocab_size + a])           # (2P,) both orders: X is symmetric
        keys, inverse = torch.cat([keys, new]).unique(return_inverse=True)
        x = torch.zeros(len(keys), device=rows.device).index_add_(
            0, inverse, torch.cat([x, torch.full((len(new),), 1.0 / d, device=rows.device)]))
    return keys // vocab_size, keys % vocab_size, x


class GloVe(nn.Module):
    """Word vectors w, context vectors w̃ and their biases: forward(i, j) = w_i · w̃_j + b_i + b̃_j."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        V, D = cfg.vocab_size, cfg.dim
        self.w = nn.Embedding(V, D)                                         # w_i
        self.w_tilde = nn.Embedding(V, D)                                   # w̃_j
        self.b = nn.Embedding(V, 1)                                         # b_i
        self.b_tilde = nn.Embedding(V, 1)                                   # b̃_j
        for table in (self.w, self.w_tilde, self.b, self.b_tilde):          # the release: uniform ±0.5/D
            nn.init.uniform_(table.weight, -0.5 / D, 0.5 / D)

    def forward(self, i: Tensor, j: Tensor) -> Tensor:
        """Predicted log X_ij for word ids i, j (B,): (B,)."""
        return (self.w(i) * self.w_tilde(j)).sum(-1) + self.b(i)[..., 0] + self.b_tilde(j)[..., 0]

    def vectors(self) -> Tensor:
        """The word vectors: W + W̃ (V, D), [W; W̃] (V, 2D) or W (V, D), as `cfg.vectors` says."""
        if self.cfg.vectors == "sum":
            return self.w.weight + self.w_tilde.weight
        if self.cfg.vectors == "concat":
            return torch.cat([self.w.weight, self.w_tilde.weight], -1)
        return self.w.weight

    def loss(self, i: Tensor, j: Tensor, x: Tensor) -> Tensor:
        """J of equation (8) over a batch of non-zero entries (i, j, X_ij), divided by the batch size."""
        f = weighting(x, self.cfg.x_max, self.cfg.alpha)                    # (B,)
        return (f * (self(i, j) - x.log()) ** 2).mean()


def sentence_rows(dataset) -> Tensor:
    """All sentences of a dataset of (ids (L,),) items as one (N, L) tensor."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0]
    return torch.stack([dataset[k][0] for k in range(len(dataset))])


class GloVeObjective(EmbeddingObjective):
    """Counts X once over the training corpus in `prepare`, then fits (8) on batches of its non-zero entries."""

    def prepare(self, data) -> TensorDataset:
        super().prepare(data)                                               # counts and categories
        cfg = self.model.cfg
        return TensorDataset(*cooccurrence(sentence_rows(data.train), cfg.vocab_size, cfg.context))

    def measure(self, batch) -> dict[str, Tensor]:
        if len(batch) == 3:                                                 # entries of X: i (B,), j (B,), X_ij (B,)
            i, j, x = batch
        else:  # a batch of sentences (held-out text): the entries of that batch's own X
            cfg = self.model.cfg
            i, j, x = cooccurrence(batch[0], cfg.vocab_size, cfg.context)
        if not len(x):
            return {"loss": self.model.b.weight.sum() * 0}
        return {"loss": self.model.loss(i, j, x)}


register(Entry(
    name="glove", title="GloVe (global vectors from weighted least squares on log co-occurrence counts)",
    family="language", year=2014,
    paper=Paper("J. Pennington, R. Socher, C. D. Manning", "GloVe: Global Vectors for Word Representation",
                "EMNLP 2014, ACL Anthology D14-1162"),
    summary="Counts how often each word occurs near each other one over the whole corpus (1/d for words d "
            "apart), then fits word and context vectors whose dot products plus biases are the log counts, "
            "weighting each pair by f(X_ij) = min(1, (X_ij/x_max)^α); a word's vector is w and w̃ side by "
            "side (the paper sums them).",
    when_to_use="Static word vectors from a corpus that fits a count pass: training then costs the number of "
                "distinct co-occurring pairs, not the corpus length, so many epochs are cheap; analogies "
                "(linear relations between words) come out well.",
    when_not="Words outside the vocabulary (fastText builds them from character n-grams); vocabularies so "
             "large that the non-zero counts do not fit in memory (stream the text with word2vec); meaning "
             "that depends on the sentence (ELMo, BERT).",
    relations=[
        Relation("alternative_to", "word2vec", "fits global co-occurrence log-counts rather than predicting local "
                 "context"),
    ],
    config=Config, build=GloVe, objective=GloVeObjective, task="embedding",
    train=Train(epochs=30, batch_size=512, lr=2e-2, weight_decay=0.1, schedule="cosine"),
    data=Data("planted-semantics", tokens="word"),
    bar=Bar("purity@5", 0.9, "max", 120),
    more_bars=[Bar("analogy", 0.7, "max", 120)],
    notes="On planted-semantics, where the words of a category never meet but do meet their context words and "
          "their relation partner, vectors=sum (W + W̃, the paper's) reaches analogy 0.99 but purity@5 only 0.71; "
          "vectors=concat ([W; W̃], the default) purity@5 0.98, analogy 0.98.",
))
