"""Word data for embeddings (task "embedding"): sentences of word ids to train on, queries to measure with.

The vocabulary is the specials every deepatlas text vocabulary starts with (PAD 0, UNK 1, MASK 2,
CLS 3, SEP 4), then the words of the training split by descending count (ties alphabetical). Words
are lower-case runs of letters and digits, joined by inner hyphens, apostrophes or underscores
("bottle-fed", "don't", "max_len"). Words outside the kept vocabulary are dropped from the sentences,
as word2vec's release does, so no row holds UNK.

Items:
    train            (ids (L,) long,)     a sentence's word ids, right-padded with PAD; longer sentences
                                          are cut into pieces of at most L = 32 words
    val/test, planted-semantics: evaluation queries against the ground truth,
                     (kind () long, ids (4,) long)
                     kind PURITY:  ids = (w, PAD, PAD, PAD): a category word whose 5 nearest neighbours
                                   should share its category (purity@5)
                     kind ANALOGY: ids = (a, b, c, d): (a, b) and (c, d) are pairs of one planted relation;
                                   the nearest word to b - a + c should be d (3CosAdd)
    val/test, other corpora: held-out sentences as in train (no ground truth: only a loss is measured)

Datasets:
    planted-semantics   data/planted.py's corpus: its train sentences; val and test split the queries.
                        Analogy queries are all ordered pairs of distinct pairs within a relation
                        (2 x 12 x 11 = 264), shuffled with a fixed seed, half to val, half to test. Purity
                        queries are split too, 6 words of each category to val and the other 6 to test:
                        all words are trained on either way, but the epoch the loop keeps is then chosen on
                        queries the test never asks.
    stdlib-text         the standard library's docstrings (data/text.py), split by module; the kept
                        vocabulary is the `vocab` most frequent words (default 20,000).
    a .txt file, or a folder of them (read recursively, in sorted order): sentences split 80/10/10 with
                        the fixed split seed; no ground truth.

spec: {"source", "tokens": "word", "vocab": [word per id], "counts": [train count per id],
       "corpus_hash"} and, for planted-semantics, "category": [category index per id, -1 for none] and
       "category_names".
"""
from __future__ import annotations

import hashlib
import random
import re
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from deepatlas.data import SPLIT_SEED, Splits
from deepatlas.data.text import CLS, MASK, PAD, SEP, SPECIALS, UNK  # noqa: F401  (the specials of every vocabulary)
from deepatlas.errors import DeepAtlasError

N_SPECIALS = len(SPECIALS)
PURITY, ANALOGY = 0, 1  # query kinds
EMBEDDED = ["planted-semantics", "stdlib-text"]
MAX_WORDS = 32     # L: words per training row; longer sentences are cut into pieces
DEFAULT_VOCAB = 20_000  # words kept from a free-text corpus when Recipe.vocab is 0
QUERY_SEED = 5

WORD = re.compile(r"[a-z0-9]+(?:['_-][a-z0-9]+)*")
SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n\s*\n")


def words_of(text: str) -> list[str]:
    """Lower-case words of `text`, in order."""
    return WORD.findall(text.lower())


def sentences_of(text: str) -> list[list[str]]:
    """Free text -> sentences (split after . ! ? ; : and at blank lines) as word lists, empty ones dropped."""
    return [w for w in map(words_of, SENTENCE_END.split(text)) if w]


def chunks(sentences: list[list[str]], size: int = MAX_WORDS) -> list[list[str]]:
    """Cut sentences longer than `size` words into consecutive pieces of at most `size`."""
    return [s[i:i + size] for s in sentences for i in range(0, len(s), size)]


# ---- vocabulary and encoding -------------------------------------------------------------------

def build_vocab(sentences: list[list[str]], keep: int = 0) -> tuple[list[str], list[int]]:
    """Specials, then the `keep` most frequent words (0: all) by descending count, ties alphabetical.
    Returns (vocab, counts) with counts[i] the training count of word i (0 for the specials)."""
    counts: dict[str, int] = {}
    for s in sentences:
        for w in s:
            counts[w] = counts.get(w, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if keep:
        ranked = ranked[:keep]
    return SPECIALS + [w for w, _ in ranked], [0] * N_SPECIALS + [c for _, c in ranked]


def encode(sentences: list[list[str]], vocab: list[str], width: int = 0) -> Tensor:
    """Word lists -> (N, L) long ids right-padded with PAD; out-of-vocabulary words are dropped.
    L is the longest sentence (or `width`); sentences with no known word give all-PAD rows, left out."""
    index = {w: i for i, w in enumerate(vocab)}
    rows = [r for r in ([index[w] for w in s if w in index] for s in sentences) if r]
    length = max([width, *map(len, rows)]) if rows else max(width, 1)
    return torch.tensor([r + [PAD] * (length - len(r)) for r in rows], dtype=torch.long).view(-1, length)


def corpus_hash(sentences: list[list[str]]) -> str:
    return hashlib.sha256("\n".join(" ".join(s) for s in sentences).encode()).hexdigest()[:16]


class WordData(Splits):
    @property
    def dims(self) -> dict[str, int]:
        return {"vocab_size": len(self.spec["vocab"])}


def make_spec(source: str, train: list[list[str]], keep: int) -> dict:
    vocab, counts = build_vocab(train, keep)
    return {"source": source, "tokens": "word", "vocab": vocab, "counts": counts, "corpus_hash": corpus_hash(train)}


def sentence_splits(source: str, splits: dict[str, list[list[str]]], keep: int) -> WordData:
    """Train/val/test sentences (word lists) -> WordData whose every split is rows of word ids."""
    spec = make_spec(source, splits["train"], keep)
    sets = [TensorDataset(encode(chunks(splits[name]), spec["vocab"])) for name in ("train", "val", "test")]
    return WordData(*sets, spec)


# ---- planted-semantics: train sentences and ground-truth queries ----------------------------------

def planted_queries(vocab: list[str]) -> dict[str, Tensor]:
    """{"val", "test"}: (kind (N,), ids (N, 4)) query tensors for the planted ground truth (see the top)."""
    from deepatlas.data import planted
    index = {w: i for i, w in enumerate(vocab)}
    rng = random.Random(QUERY_SEED)
    parts: dict[str, list[list[int]]] = {"val": [], "test": []}
    for words in planted.CATEGORIES.values():
        words = [w for w in words if w in index]
        rng.shuffle(words)
        half = len(words) // 2
        parts["val"] += [[PURITY, index[w], PAD, PAD, PAD] for w in words[:half]]
        parts["test"] += [[PURITY, index[w], PAD, PAD, PAD] for w in words[half:]]
    for pairs in planted.RELATIONS.values():
        pairs = [(a, b) for a, b in pairs if a in index and b in index]
        quads = [[ANALOGY, index[a], index[b], index[c], index[d]]
                 for i, (a, b) in enumerate(pairs) for j, (c, d) in enumerate(pairs) if i != j]
        rng.shuffle(quads)
        half = len(quads) // 2
        parts["val"] += quads[:half]
        parts["test"] += quads[half:]
    return {name: torch.tensor(rows, dtype=torch.long) for name, rows in parts.items()}


@lru_cache(maxsize=2)
def _planted(keep: int) -> WordData:
    from deepatlas.data import planted
    corpus = planted.generate()
    train = [corpus.sentences[i].split() for i in planted.split(len(corpus.sentences))["train"]]
    spec = make_spec("planted-semantics", train, keep)
    names = list(planted.CATEGORIES)
    spec["category"] = [names.index(corpus.categories[w]) if w in corpus.categories else -1 for w in spec["vocab"]]
    spec["category_names"] = names
    queries = planted_queries(spec["vocab"])
    return WordData(TensorDataset(encode(chunks(train), spec["vocab"])),
                    TensorDataset(queries["val"][:, 0], queries["val"][:, 1:]),
                    TensorDataset(queries["test"][:, 0], queries["test"][:, 1:]), spec)


# ---- stdlib-text and users' text files ----------------------------------------------------------

def _stdlib(keep: int) -> WordData:
    from deepatlas.data import text
    docs = text.stdlib_corpus()  # {"train", "val", "test"}: the docstring text of each split (by module)
    return sentence_splits("stdlib-text", {k: sentences_of(v) for k, v in docs.items()}, keep or DEFAULT_VOCAB)


def split_sentences(sentences: list[list[str]], where: str) -> dict[str, list[list[str]]]:
    """A fixed 80/10/10 train/val/test split of sentences (the split seed, whatever the run's seed)."""
    if len(sentences) < 10:
        raise DeepAtlasError(f"{where}: {len(sentences)} sentences; need at least 10 to split 80/10/10")
    order = list(range(len(sentences)))
    random.Random(SPLIT_SEED).shuffle(order)
    n = max(1, len(sentences) // 10)
    picked = {"test": order[:n], "val": order[n:2 * n], "train": order[2 * n:]}
    return {name: [sentences[i] for i in sorted(idx)] for name, idx in picked.items()}


def read_text(path: str | Path) -> str:
    """A user's .txt file or folder (the language models' reader), with at least one word in it."""
    from deepatlas.data import text
    content = text.read_text(path)
    if not words_of(content):
        raise DeepAtlasError(f"{path}: no words in it")
    return content


def _users(source: str, keep: int) -> WordData:
    sentences = sentences_of(read_text(source))
    return sentence_splits(source, split_sentences(sentences, source), keep or DEFAULT_VOCAB)


def load(source: str, keep: int = 0) -> WordData:
    if source == "planted-semantics":
        return _planted(keep)
    if source == "stdlib-text":
        return _stdlib(keep)
    if Path(source).exists() or source.endswith(".txt"):
        return _users(source, keep)
    raise DeepAtlasError(f"unknown dataset {source!r}: not a .txt file or folder, nor one of {', '.join(EMBEDDED)}")


def load_for(options, target: str | None = None) -> WordData:
    if target is not None:
        raise DeepAtlasError("--target does not apply to word embeddings (they learn from unlabelled text)")
    if options.tokens not in ("word", "char"):  # "char" is the Recipe default: embeddings always read words
        raise DeepAtlasError(f"--set tokens={options.tokens}: word embeddings read words")
    return load(options.data, options.vocab)


def read_labeled(spec: dict, path: str) -> TensorDataset:
    """A text file (or folder) to evaluate on: all its sentences, encoded with the run's vocabulary (loss only)."""
    rows = encode(chunks(sentences_of(read_text(path))), spec["vocab"])
    if not len(rows):
        raise DeepAtlasError(f"{path}: none of its words is in the vocabulary of this run")
    return TensorDataset(rows)


def query_words(text: str) -> list[str]:
    """Words to look up: `text` split at spaces and commas, lower-cased."""
    return [w for w in re.split(r"[\s,]+", text.strip().lower()) if w]


def read_inputs(spec: dict, text: str) -> tuple[Tensor, list[str]]:
    """Words to look up -> (ids (N,) long, UNK for an unknown word; the words)."""
    words = query_words(text)
    if not words:
        raise DeepAtlasError("no word given: name one or more words, separated by spaces or commas")
    index = {w: i for i, w in enumerate(spec["vocab"])}
    return torch.tensor([index.get(w, UNK) for w in words], dtype=torch.long), words


@torch.no_grad()
def predict(objective, spec: dict, text: str, k: int = 10) -> list[dict]:
    """The `k` nearest words by cosine of each word in `text`: rows {"input", "predicted": "n1, n2, ...",
    "neighbours": [[word, cosine], ...]}. A word outside the vocabulary is built by the model's
    `vector_of(word)` where it has one (fastText's character n-grams), else it is an error."""
    ids, words = read_inputs(spec, text)
    vocab, model = spec["vocab"], objective.model
    vectors = model.vectors()                                              # (V, D)
    queries = []
    for i, word in zip(ids.tolist(), words):
        if i != UNK:
            queries.append(vectors[i])
        elif hasattr(model, "vector_of"):
            queries.append(model.vector_of(word).to(vectors))
        else:
            raise DeepAtlasError(f"word {word!r} is not in the vocabulary of this run")
    exclude = torch.where(ids == UNK, PAD, ids).to(vectors.device)[:, None]  # (N, 1) the word itself
    scores, nearest = objective.nearest(torch.stack(queries), k, exclude)    # (N, k), (N, k)
    rows = []
    for word, s, n in zip(words, scores.tolist(), nearest.tolist()):
        neighbours = [[vocab[j], round(c, 4)] for j, c in zip(n, s)]
        rows.append({"input": word, "predicted": ", ".join(w for w, _ in neighbours), "neighbours": neighbours})
    return rows
