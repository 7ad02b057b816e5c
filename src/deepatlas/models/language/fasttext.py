"""FastText: skip-gram word vectors built from bags of hashed character n-grams.

P. Bojanowski, E. Grave, A. Joulin, T. Mikolov, 2017. "Enriching Word Vectors with Subword
Information." TACL 5, 135-146. arXiv:1607.04606.

Word2vec's skip-gram gives every word its own vector, so a rare word learns little and a word never
seen has none. FastText represents a word w by its character n-grams G_w: the word is written
between boundary markers, "<where>", and every substring of 3 to 6 characters is an n-gram
("<wh", "whe", "her", "ere", "re>", "<whe", ...), plus the word itself as a special sequence.
The vector of a word is the sum of its n-grams' vectors z_g, and skip-gram with negative sampling
is trained on it unchanged:

    s(w, c) = Σ_{g ∈ G_w} z_g · v_c
    loss = -log σ(s(w_t, w_c)) - Σ_{n ∈ N_{t,c}} log σ(-s(w_t, n))       (negatives n ~ unigram^0.75)

Words that share spelling share parameters: "kitten" and "kittens" have most n-grams in common,
so a word absent from training still gets a vector, the sum of its n-grams', that lands near the
words it is spelled like. N-grams are not stored in a dictionary: each is hashed (32-bit FNV-1a,
as in the fastText release) into one of `buckets` rows, collisions shared.

The (V, max_ngrams) table of each vocabulary word's rows is a buffer, filled once from the words
before training and saved with the weights, so a loaded model embeds words without its word list;
each step sums the rows with an EmbeddingBag. The paper trains with SGD and a linearly decaying
step; here the recipe's AdamW. Its subsampling threshold 1e-4 suits Wikipedia; on a corpus of
200 thousand words the default is word2vec's 1e-3.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deepatlas.catalog import Bar, Count, Data, Entry, NonNegative, Paper, Relation, Size, Train, register
from deepatlas.errors import DeepAtlasError
from deepatlas.data.words import N_SPECIALS
from deepatlas.tasks.embedding import (
    EmbeddingObjective,
    context_pairs,
    counted_negative_sampling_loss,
    negative_sampling_loss,
    subsample,
)

FNV_OFFSET, FNV_PRIME = 2166136261, 16777619


@dataclass
class Config:
    vocab_size: Size = 256
    """words in the vocabulary, specials included (set from the data)"""
    dim: Size = 64
    """vector size D (the paper: 300)"""
    buckets: Size = 2 ** 16
    """hash buckets for character n-grams (the release: 2 million)"""
    min_n: Size = 3
    """shortest character n-gram, boundary markers counted (the paper: 3)"""
    max_n: Size = 6
    """longest character n-gram (the paper: 6)"""
    max_ngrams: Size = 64
    """n-gram slots per word in the lookup table, the word's own row included; longer words keep their first ones"""
    context: Size = 5
    """the window: largest distance between center and context word (each center draws b ~ U{1..context})"""
    negatives: Count = 5
    """k, noise words per observed word, drawn from the unigram^0.75 table (the paper: 5)"""
    sample: NonNegative = 1e-3
    """t, subsampling threshold: a word of frequency f is kept with probability sqrt(t/f) + t/f (0: off; paper: 1e-4)"""

    def __post_init__(self):
        if self.min_n > self.max_n:  # no n-gram would be made: silently a plain word2vec
            raise DeepAtlasError(f"min_n={self.min_n}: must not exceed max_n={self.max_n}")


def fnv1a(text: str) -> int:
    """32-bit FNV-1a of the UTF-8 bytes, as the fastText release hashes them (bytes read as signed chars)."""
    h = FNV_OFFSET
    for byte in text.encode("utf-8"):
        h ^= byte if byte < 128 else byte | 0xFFFFFF00                      # int8 -> uint32 sign extension
        h = (h * FNV_PRIME) & 0xFFFFFFFF
    return h


def char_ngrams(word: str, min_n: int = 3, max_n: int = 6) -> list[str]:
    """The n-grams of "<word>", n = min_n..max_n, in the release's order (by start, then length).

    A lone boundary marker is never an n-gram; the whole "<word>" is one when it is short enough."""
    marked = f"<{word}>"
    out = []
    for start in range(len(marked)):
        for n in range(min_n, max_n + 1):
            if start + n > len(marked):
                break
            if not (n == 1 and (start == 0 or start + n == len(marked))):
                out.append(marked[start:start + n])
    return out


class FastText(nn.Module):
    """Input rows z: V words, then `buckets` hashed n-grams, then one all-zero padding row; output rows v_c."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        V, D = cfg.vocab_size, cfg.dim
        self.pad_row = V + cfg.buckets
        self.z = nn.EmbeddingBag(V + cfg.buckets + 1, D, mode="sum", padding_idx=self.pad_row)  # z_g
        self.v = nn.Embedding(V, D)                                         # v_c: context (output) vectors
        nn.init.uniform_(self.z.weight, -1 / D, 1 / D)                      # the release's initialization
        with torch.no_grad():
            self.z.weight[self.pad_row].zero_()
        nn.init.zeros_(self.v.weight)
        # rows of z summed into each vocabulary word: its own row, then its n-grams' buckets; padded
        self.register_buffer("subwords", torch.full((V, cfg.max_ngrams), self.pad_row, dtype=torch.long))
        self.subwords[:, 0] = torch.arange(V)
        # FNV-1a hash of each word (-1: none), to find a spelled word's own row in vector_of
        self.register_buffer("word_hash", torch.full((V,), -1, dtype=torch.long))

    def ngram_rows(self, word: str) -> list[int]:
        """Rows of z for the n-grams of `word`: V + hash(g) mod buckets."""
        V, cfg = self.cfg.vocab_size, self.cfg
        return [V + fnv1a(g) % cfg.buckets for g in char_ngrams(word, cfg.min_n, cfg.max_n)]

    def set_vocab(self, words: list[str]) -> None:
        """Fill the (V, max_ngrams) n-gram table and the word hashes from the vocabulary (index = id)."""
        if len(words) != self.cfg.vocab_size:
            raise ValueError(f"vocabulary of {len(words)} words for vocab_size={self.cfg.vocab_size}")
        table = torch.full_like(self.subwords, self.pad_row, device="cpu")
        hashes = torch.full_like(self.word_hash, -1, device="cpu")
        for idx, word in enumerate(words):  # once per vocabulary word, before training
            rows = [idx] + (self.ngram_rows(word) if idx >= N_SPECIALS else [])
            rows = rows[:self.cfg.max_ngrams]
            table[idx, :len(rows)] = torch.tensor(rows)
            if idx >= N_SPECIALS:
                hashes[idx] = fnv1a(word)
        self.subwords.copy_(table)
        self.word_hash.copy_(hashes)

    def embed(self, ids: Tensor) -> Tensor:
        """Word vectors Σ_{g ∈ G_w} z_g for word ids (...): (..., D)."""
        bags = self.subwords[ids.reshape(-1)]                               # (N, max_ngrams) rows of z
        return self.z(bags).view(*ids.shape, -1)                            # (N, D) -> (..., D)

    def forward(self, center: Tensor, context: Tensor) -> Tensor:
        """Scores s(w, c) for center ids (B,) and context ids (B, K): (B, K)."""
        return torch.einsum("bd,bkd->bk", self.embed(center), self.v(context))  # (B, D) · (B, K, D) -> (B, K)

    def vectors(self) -> Tensor:
        """Every vocabulary word's vector (V, D)."""
        return self.embed(torch.arange(self.cfg.vocab_size, device=self.v.weight.device))

    def vector_of(self, word: str) -> Tensor:
        """The vector (D,) of any word: its own row (if in the vocabulary) plus its n-grams' rows."""
        rows = self.ngram_rows(word)
        found = (self.word_hash == fnv1a(word)).nonzero()
        if len(found):
            rows = [int(found[0, 0])] + rows
        rows = torch.tensor(rows[:self.cfg.max_ngrams], device=self.v.weight.device)
        return self.z(rows[None])[0]


class FastTextObjective(EmbeddingObjective):
    """Skip-gram with negative sampling on the sentences (B, L), each center word a sum of its n-grams."""

    def prepare(self, data) -> None:
        super().prepare(data)                                               # counts and categories
        self.model.set_vocab(data.spec["vocab"])                           # the n-gram table, from the words

    def measure(self, batch) -> dict[str, Tensor]:
        cfg = self.model.cfg
        x = batch[0]                                                        # (B, L) word ids, PAD-right
        if self.training and cfg.sample > 0:
            x = subsample(x, self.keep(cfg.sample))                         # a new draw every epoch
        center, context = context_pairs(x, cfg.context)                     # (P,), (P,)
        noise = self.negatives((len(center), cfg.negatives))                # (P, k) ~ P_n
        V = cfg.vocab_size
        if V * V <= 4 * noise.numel():  # a small vocabulary: every word's n-gram sum, then pair counts, one matmul
            loss = counted_negative_sampling_loss(self.model.vectors(), self.model.v.weight, center, context, noise)
        else:
            words, which = center.unique(return_inverse=True)               # each distinct center summed once
            v_in = self.model.embed(words)[which]                           # (U, D) -> (P, D): Σ_g z_g
            loss = negative_sampling_loss(v_in, self.model.v(context), self.model.v(noise),
                                          (noise != context[:, None]).float()).sum()
        return {"loss": loss / max(len(center), 1)}                        # mean over the pairs


register(Entry(
    name="fasttext", title="fastText (skip-gram over bags of character n-grams)", family="language", year=2017,
    paper=Paper("P. Bojanowski, E. Grave, A. Joulin, T. Mikolov", "Enriching Word Vectors with Subword Information",
                "arXiv:1607.04606"),
    summary="Skip-gram with negative sampling where a word's vector is the sum of its own vector and of the "
            "vectors of its character 3- to 6-grams (hashed into buckets), so words spelled alike share "
            "parameters and any word, even one never seen, gets a vector.",
    when_to_use="Static word vectors for morphologically rich languages, noisy text (typos, variants) or "
                "small corpora with many rare words; when you must embed words missing from the training "
                "vocabulary.",
    when_not="Meaning that depends on the sentence (ELMo, BERT); when spelling says nothing of meaning "
             "(codes, identifiers, invented names) the n-grams only add parameters and time (word2vec); a "
             "global count matrix is at hand (GloVe).",
    relations=[
        Relation("builds_on", "word2vec", "skip-gram over character n-grams: vectors for words never seen"),
    ],
    config=Config, build=FastText, objective=FastTextObjective, task="embedding",
    train=Train(epochs=10, batch_size=1024, lr=2e-2, schedule="cosine"),
    data=Data("planted-semantics", tokens="word"),
    bar=Bar("purity@5", 0.9, "max", 120),
    more_bars=[Bar("analogy", 0.7, "max", 120)],
))
