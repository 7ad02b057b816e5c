"""word2vec: continuous bag-of-words and skip-gram word vectors, trained with negative sampling.

T. Mikolov, K. Chen, G. Corrado, J. Dean, 2013. "Efficient Estimation of Word Representations in
Vector Space." arXiv:1301.3781. T. Mikolov, I. Sutskever, K. Chen, G. Corrado, J. Dean, 2013.
"Distributed Representations of Words and Phrases and their Compositionality." arXiv:1310.4546.

Each word w has an input vector v_w and an output vector v'_w (two V x D matrices, no hidden layer).
Skip-gram predicts each context word w_O within a window of the center word w_I from v_{w_I}; CBOW
predicts the center word from the average of its context words' input vectors, h = mean_j v_{w_j}.
Instead of a softmax over the vocabulary, negative sampling tells the observed word from k noise
words drawn from the unigram distribution raised to 3/4:

    log σ(v'_{w_O}·v_{w_I}) + Σ_{i=1..k} E_{w_i ~ P_n(w)} [log σ(−v'_{w_i}·v_{w_I})],   P_n(w) ∝ U(w)^{3/4}

(CBOW: h in place of v_{w_I}, the center word as w_O). Frequent words are subsampled: each occurrence
is kept with probability sqrt(t/f) + t/f (the released code's form of the paper's 1 − sqrt(t/f)
discard rule; f the word's frequency), anew every epoch, and the window around each center is shrunk
to b ~ U{1..context}, so nearer words count more. As in the release, input vectors start uniform in
±0.5/D and output vectors at zero; the input vectors are the embedding. The sampling helpers and the
evaluation (purity@5, analogies by 3CosAdd) are shared with GloVe and fastText in tasks/embedding.py.

Where the release updates the vectors after every pair by SGD with a linearly decaying rate, this file
takes one step per batch of sentences on the mean loss of all its pairs, with AdamW and a cosine decay
(the recipe): a whole batch of windows, noise draws and dot products is a handful of tensor operations.
For a small vocabulary (V² at most 4x the batch's P·(k+1) scored pairs) skip-gram sums the same loss
from pair counts over the V x V matrix of all v'·v scores instead of gathering P·(k+1) rows
(counted_negative_sampling_loss: the same value and gradients).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from deepatlas.catalog import Bar, Count, Data, Entry, NonNegative, Paper, Relation, Size, Train, register
from deepatlas.tasks.embedding import (
    EmbeddingObjective,
    context_pairs,
    context_windows,
    counted_negative_sampling_loss,
    negative_sampling_loss,
    subsample,
)


@dataclass
class Config:
    vocab_size: Size = 273
    """words in the vocabulary, specials included (set from the data)"""
    dim: Size = 50
    """D, the size of the word vectors"""
    mode: Literal["skipgram", "cbow"] = "skipgram"
    """skipgram: the center word predicts each context word; cbow: the context average predicts the center"""
    context: Size = 2
    """the window: largest center-context distance, each center drawing b ~ U{1..context} (the papers: 5 to 10)"""
    negatives: Count = 5
    """k, noise words per observed word, drawn from the unigram^0.75 table"""
    sample: NonNegative = 1e-3
    """t, the subsampling threshold: words with frequency f > t are kept with probability sqrt(t/f) + t/f (0: off)"""


class Word2Vec(nn.Module):
    """Input vectors v (V, D), the embedding, and output vectors v' (V, D), the negative-sampling classifier."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.input = nn.Embedding(cfg.vocab_size, cfg.dim)                    # v_w
        self.output = nn.Embedding(cfg.vocab_size, cfg.dim)                   # v'_w
        nn.init.uniform_(self.input.weight, -0.5 / cfg.dim, 0.5 / cfg.dim)   # as in word2vec.c
        nn.init.zeros_(self.output.weight)

    def forward(self, ids: Tensor) -> Tensor:
        """The word vectors of ids (...) -> (..., D)."""
        return self.input(ids)

    def vectors(self) -> Tensor:
        return self.input.weight                                              # (V, D)


class Word2VecObjective(EmbeddingObjective):
    """Negative sampling over the (center, context) pairs of a batch of sentences (B, L)."""

    def measure(self, batch) -> dict[str, Tensor]:
        cfg, model = self.model.cfg, self.model
        x = batch[0]                                                          # (B, L) word ids, PAD-right
        if self.training and cfg.sample > 0:
            x = subsample(x, self.keep(cfg.sample))                           # a new draw every epoch
        if cfg.mode == "skipgram":
            inputs, observed = context_pairs(x, cfg.context)                  # (P,) w_I, (P,) w_O
        else:
            ctx, valid = context_windows(x, cfg.context)                      # (B, L, 2W)
            center = valid.any(-1).view(-1).nonzero().squeeze(1)              # (P,) positions with some context
            ctx = ctx.reshape(-1, ctx.shape[-1]).index_select(0, center)      # (P, 2W)
            weight = valid.view(-1, ctx.shape[-1]).index_select(0, center).float()  # (P, 2W)
            weight = weight / weight.sum(-1, keepdim=True)                    # 1/|context| on each real one
            observed = x.reshape(-1).index_select(0, center)                  # (P,) the center word is w_O
        noise = self.negatives((len(observed), cfg.negatives))                # (P, k) ~ P_n
        V = cfg.vocab_size
        if cfg.mode == "skipgram" and V * V <= 4 * noise.numel():  # small vocabulary: the same sum from pair counts
            total = counted_negative_sampling_loss(model.input.weight, model.output.weight, inputs, observed, noise)
        else:
            if cfg.mode == "skipgram":
                v_in = model.input(inputs)                                    # (P, D) v_{w_I}
            else:
                v_in = torch.bmm(weight[:, None], model.input(ctx)).squeeze(1)  # (P, 1, 2W) @ (P, 2W, D): h
            total = negative_sampling_loss(v_in, model.output(observed), model.output(noise),
                                           (noise != observed[:, None]).float()).sum()
        return {"loss": total / max(len(observed), 1)}                        # mean over the observed words


register(Entry(
    name="word2vec", title="word2vec (skip-gram and CBOW with negative sampling)", family="language", year=2013,
    paper=Paper("T. Mikolov, K. Chen, G. Corrado, J. Dean; T. Mikolov, I. Sutskever, K. Chen, G. Corrado, J. Dean",
                "Efficient Estimation of Word Representations in Vector Space; Distributed Representations of "
                "Words and Phrases and their Compositionality (arXiv:1310.4546)", "arXiv:1301.3781"),
    summary="Two matrices of word vectors trained so that a word's vector predicts the words around it "
            "(skip-gram) or the context average predicts the word (CBOW), telling real context words from "
            "unigram^0.75 noise words; frequent words are subsampled.",
    when_to_use="Fast static word vectors from raw text (similar words, analogies, features for a small "
                "model); skip-gram for rare words and small corpora, CBOW for speed on large ones.",
    when_not="Words outside the vocabulary (fastText builds them from character n-grams); meaning that "
             "depends on the sentence (contextual models: ELMo, BERT); a global count matrix is at hand "
             "(GloVe fits it directly).",
    relations=[
        Relation("alternative_to", "glove", "predicts context words from local windows rather than fitting global "
                 "co-occurrence counts"),
    ],
    config=Config, build=Word2Vec, objective=Word2VecObjective, task="embedding",
    train=Train(epochs=20, batch_size=1024, lr=3e-2, schedule="cosine"),
    data=Data("planted-semantics", tokens="word"),
    bar=Bar("purity@5", 0.9, "max", 120),
    more_bars=[Bar("analogy", 0.7, "max", 120), Bar("purity@5", 0.9, "max", 120, overrides={"mode": "cbow"}),
               Bar("analogy", 0.7, "max", 120, overrides={"mode": "cbow"})],
))
