"""Text data for language models: corpora, tokenizers, next-token windows and labelled sentences.

Corpora (each split into train/val/test once, the same way whatever the run's seed):
    stdlib-text        English from the docstrings of the Python standard library installed on this
                       machine (module, class and function docstrings in source order, doctest lines
                       dropped), split by top-level module (a fixed hash of its name: ~80/10/10), so
                       the held-out text comes from modules never seen in training. The spec records
                       the Python version and the corpus's SHA-256.
    planted-semantics  the generated corpus of data/planted.py, one sentence per line.
    planted-topics     its sentences labelled by topic (the category of the subject word): a
                       sentence classification task (items (x, label)).
    a .txt file or a folder of .txt files: read as UTF-8, split 80/10/10 in order (by paragraph; by line when
                       there are fewer than 10 paragraphs; by character when there are fewer than 10 lines).

Views (Recipe.tokens): characters; byte-pair subwords (BPE, Sennrich et al. 2016, learned on the
train split by the `tokenizers` library, byte-level like GPT-2, Recipe.vocab merges' worth of
tokens); or words (\\w+ runs and single punctuation marks, the Recipe.vocab most frequent kept,
the rest UNK). Every vocabulary starts with the same five specials: PAD 0, UNK 1, MASK 2, CLS 3, SEP 4.

Language-model items are windows of Recipe.window tokens (x, y, baseline): x (T,) token ids, y (T,)
the next tokens, and baseline (T,) a bigram model's -ln p(y_t | x_t), the bigram (interpolated with
the unigram, its weight chosen on the val split) fitted on the train split: the yardstick the
language models' bars are measured against. Training windows overlap by half; val/test windows
tile the split, so every held-out token is predicted once. `baseline` reports that bigram's cross-entropy on a
split (a topic run's: the majority class), the trivial yardstick `eval` prints beside the model.

`predict` continues a prompt: `length` tokens drawn at a `temperature` among the `top_k` likeliest, with random
numbers from `seed` and the prompt (the same seed, the same continuation), or classifies sentences for a topic run.
"""
from __future__ import annotations

import ast
import hashlib
import json
import math
import re
import sys
import sysconfig
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from deepatlas.data import Splits, is_file, planted, read_lines
from deepatlas.errors import DeepAtlasError, option

PAD, UNK, MASK, CLS, SEP = 0, 1, 2, 3, 4
SPECIALS = ["<pad>", "<unk>", "<mask>", "<cls>", "<sep>"]
EMBEDDED = ["stdlib-text", "planted-semantics", "planted-topics"]
DEFAULT_WINDOW = {"char": 128, "bpe": 64, "word": 32}
DEFAULT_VOCAB = {"bpe": 1024, "word": 5000}
MAX_LENGTH = 10_000
"""the most tokens `predict` draws for a prompt"""
MAX_PROMPT_TOKENS = 10_000
"""the longest prompt a language model that reads all of it (ELMo's LSTM) continues; a model with a fixed context
(GPT's `block_size`) is given only the prompt's last block_size tokens, so its prompts may be any length"""
SPLITS = ("train", "val", "test")
WORD = re.compile(r"\w+|[^\w\s]")

# ---- corpora ---------------------------------------------------------------------------------


def _docstrings(tree: ast.AST):
    """Docstrings of a module and of its classes and functions, in source order."""
    if isinstance(tree, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = ast.get_docstring(tree)
        if doc:
            yield doc
    for child in ast.iter_child_nodes(tree):
        yield from _docstrings(child)


def clean_docstring(doc: str) -> str:
    """Drop doctest lines (">>> ", "... " and their output up to a blank line) and collapse blank runs."""
    lines, in_doctest = [], False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped.startswith((">>>", "... ")):
            in_doctest = True
        if in_doctest:
            in_doctest = bool(stripped)
            continue
        lines.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def module_split(name: str) -> str:
    """The split of a top-level standard-library module: a fixed hash of its name, ~80/10/10."""
    bucket = int(hashlib.sha256(f"0:{name}".encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


@lru_cache(maxsize=1)
def stdlib_corpus() -> dict[str, str]:
    """{split: text} from the installed standard library's docstrings (test suites left out)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "__pycache__"}
    parts: dict[str, list[str]] = {s: [] for s in SPLITS}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if skip & set(rel):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):
            continue
        docs = [clean_docstring(d) for d in _docstrings(tree)]
        parts[module_split(rel[0].removesuffix(".py"))] += [d for d in docs if len(d) >= 20]
    if not parts["train"]:
        raise DeepAtlasError(f"stdlib-text: no docstrings found under {root}")
    return {s: "\n\n".join(docs) for s, docs in parts.items()}


def read_text(path: str | Path) -> str:
    """The text of a .txt file, or of every .txt file under a folder (sorted), read as UTF-8 (a BOM is
    dropped); one clear error for a missing path, a folder without .txt files, bad bytes or no text."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.txt") if f.is_file())
        if not files:
            raise DeepAtlasError(f"{path}: no .txt files in this folder")
    elif p.is_file():
        files = [p]
    else:
        raise DeepAtlasError(f"{path}: no such file or folder")
    texts = []
    for f in files:
        try:
            texts.append(f.read_text(encoding="utf-8-sig"))
        except UnicodeDecodeError as err:
            raise DeepAtlasError(f"{f}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    text = "\n\n".join(texts)
    if not text.strip():
        raise DeepAtlasError(f"{path}: the {'files are' if p.is_dir() else 'file is'} empty")
    return text


def read_corpus(path: str) -> dict[str, str]:
    """A user's .txt file or folder of .txt files, split 80/10/10 in reading order: by paragraph, by line when there
    are fewer than 10 paragraphs, by character when there are fewer than 10 lines too (one long line)."""
    paragraphs = [q.strip() for q in re.split(r"\n\s*\n", read_text(path)) if q.strip()]
    if len(paragraphs) < 10 and sum(map(len, paragraphs)) < 1000:
        raise DeepAtlasError(f"{path}: too little text to split into train/val/test (need 10 paragraphs or 1,000 characters)")
    joint = "\n\n"
    if len(paragraphs) < 10:  # a few long paragraphs: split the lines instead (joined as they were, one newline)
        paragraphs, joint = [line for q in paragraphs for line in q.splitlines() if line.strip()], "\n"
    if len(paragraphs) < 10:
        paragraphs, joint = list(joint.join(paragraphs)), ""
    a, b = int(0.8 * len(paragraphs)), int(0.9 * len(paragraphs))
    return {"train": joint.join(paragraphs[:a]), "val": joint.join(paragraphs[a:b]), "test": joint.join(paragraphs[b:])}


def planted_corpus() -> dict[str, str]:
    corpus = planted.generate()
    return {s: "\n".join(corpus.sentences[i] for i in idx)
            for s, idx in planted.split(len(corpus.sentences)).items()}


def corpus(source: str) -> dict[str, str]:
    """{split: text} of an embedded corpus name or a user's file/folder."""
    if source == "stdlib-text":
        return stdlib_corpus()
    if source in ("planted-semantics", "planted-topics"):
        return planted_corpus()
    if not Path(source).exists():
        raise DeepAtlasError(f"unknown text data {source!r}: give {', '.join(EMBEDDED)}, a .txt file or a folder")
    return read_corpus(source)

# ---- tokenizers ------------------------------------------------------------------------------


def train_bpe(text: str, vocab: int) -> str:
    """A byte-level BPE tokenizer learned on `text`, as the `tokenizers` JSON string (kept in the spec)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text.split("\n\n"), trainer)
    return tok.to_str()


@lru_cache(maxsize=4)
def _bpe(spec_json: str):
    from tokenizers import Tokenizer
    return Tokenizer.from_str(spec_json)


def make_spec(source: str, tokens: str, vocab: int, train_text: str) -> dict:
    """How to turn text into ids, learned from the train split."""
    spec = {"source": source, "tokens": tokens}
    if tokens == "char":
        spec["vocab"] = SPECIALS + sorted(set(train_text))
    elif tokens == "word":
        counts = Counter(WORD.findall(train_text))
        spec["vocab"] = SPECIALS + [w for w, _ in counts.most_common(vocab or DEFAULT_VOCAB["word"])]
    else:
        spec["bpe"] = train_bpe(train_text, vocab or DEFAULT_VOCAB["bpe"])
    return spec


def vocab_size(spec: dict) -> int:
    return _bpe(spec["bpe"]).get_vocab_size() if spec["tokens"] == "bpe" else len(spec["vocab"])


def encode(spec: dict, text: str) -> list[int]:
    if spec["tokens"] == "bpe":
        return _bpe(spec["bpe"]).encode(text).ids
    index = _index(tuple(spec["vocab"]))
    pieces = WORD.findall(text) if spec["tokens"] == "word" else text
    return [index.get(p, UNK) for p in pieces]


@lru_cache(maxsize=4)
def _index(vocab: tuple[str, ...]) -> dict[str, int]:
    return {t: i for i, t in enumerate(vocab)}


def decode(spec: dict, ids: list[int]) -> str:
    """Text of token ids; specials are dropped (UNK shows as "?")."""
    ids = [i for i in ids if i == UNK or i >= len(SPECIALS)]
    if spec["tokens"] == "bpe":
        return _bpe(spec["bpe"]).decode(ids)
    pieces = ["?" if i == UNK else spec["vocab"][i] for i in ids]
    return (" " if spec["tokens"] == "word" else "").join(pieces)

# ---- the bigram yardstick and windows ------------------------------------------------------


class Bigram:
    """p(b | a) = λ c(a, b) / c(a) + (1 - λ) p(b), p(b) the add-one unigram; fitted on the train ids."""

    def __init__(self, train: np.ndarray, vocab: int):
        self.V = vocab
        self.unigram = (np.bincount(train, minlength=vocab) + 1.0) / (len(train) + vocab)
        self.pairs, self.pair_counts = np.unique(train[:-1].astype(np.int64) * vocab + train[1:], return_counts=True)
        self.context = np.bincount(train[:-1], minlength=vocab).astype(np.float64)
        self.lam = 0.9

    def nll(self, a: np.ndarray, b: np.ndarray, lam: float | None = None) -> np.ndarray:
        """-ln p(b | a) for each pair of arrays of ids."""
        codes = a.astype(np.int64) * self.V + b
        pos = np.clip(np.searchsorted(self.pairs, codes), 0, len(self.pairs) - 1)
        count = np.where(self.pairs[pos] == codes, self.pair_counts[pos], 0)
        ml = np.divide(count, self.context[a], out=np.zeros(len(a)), where=self.context[a] > 0)
        lam = self.lam if lam is None else lam
        return -np.log(lam * ml + (1 - lam) * self.unigram[b])

    def tune(self, val: np.ndarray) -> Bigram:
        """Pick λ on the val ids (the baseline gets the same model selection our models get)."""
        grid = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98]
        self.lam = min(grid, key=lambda g: self.nll(val[:-1], val[1:], g).mean())
        return self


def lm_windows(ids: np.ndarray, bigram: Bigram, window: int, stride: int) -> TensorDataset:
    """(x, y, baseline) windows of `window` tokens every `stride` tokens."""
    if len(ids) < window + 1:
        raise DeepAtlasError(f"a split has {len(ids)} tokens, fewer than window + 1 = {window + 1}; lower --set window")
    starts = np.arange(0, len(ids) - window, stride)
    index = starts[:, None] + np.arange(window + 1)                  # (N, T+1)
    seq = ids[index]
    baseline = bigram.nll(seq[:, :-1].ravel(), seq[:, 1:].ravel()).reshape(len(starts), window)
    seq = torch.from_numpy(seq.astype(np.int64))
    return TensorDataset(seq[:, :-1], seq[:, 1:], torch.from_numpy(baseline).float())


def pad_rows(rows: list[list[int]], width: int) -> Tensor:
    """Token id lists -> (N, width) long, cut or right-padded with PAD."""
    out = torch.full((len(rows), width), PAD, dtype=torch.long)
    for i, r in enumerate(rows):  # one copy per sentence; the ids come from Python lists
        r = r[:width]
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out

# ---- the data module API -------------------------------------------------------------------


@dataclass
class TextData(Splits):
    vocab_size: int = 0
    window: int = 0
    n_classes: int = 0

    @property
    def dims(self) -> dict:
        dims = {"vocab_size": self.vocab_size, "block_size": self.window}
        return {**dims, "n_classes": self.n_classes} if self.n_classes else dims


def _topics(spec: dict, window: int) -> tuple[dict[str, TensorDataset], int]:
    corpus_ = planted.generate()
    out, width = {}, window
    encoded = {s: [encode(spec, corpus_.sentences[i]) for i in idx]
               for s, idx in planted.split(len(corpus_.sentences)).items()}
    width = window or max(map(len, encoded["train"]))
    for s, idx in planted.split(len(corpus_.sentences)).items():
        labels = torch.tensor([corpus_.topics[i] for i in idx])
        out[s] = TensorDataset(pad_rows(encoded[s], width), labels)
    return out, width


@lru_cache(maxsize=4)
def load(source: str, tokens: str = "char", window: int = 0, vocab: int = 0) -> TextData:
    texts = corpus(source)
    spec = make_spec(source, tokens, vocab, texts["train"])
    spec["sha256"] = hashlib.sha256(json.dumps(texts, sort_keys=True).encode()).hexdigest()
    if source == "stdlib-text":
        spec["python"] = sys.version.split()[0]
    V = vocab_size(spec)
    if source == "planted-topics":
        corpus_ = planted.generate()
        spec["classes"] = list(corpus_.topic_names)
        sets, width = _topics(spec, window)
        spec["window"] = width
        return TextData(sets["train"], sets["val"], sets["test"], spec, vocab_size=V, window=width,
                        n_classes=len(spec["classes"]))
    window = window or DEFAULT_WINDOW[tokens]
    spec["window"] = window
    ids = {s: np.asarray(encode(spec, texts[s]), dtype=np.int64) for s in SPLITS}
    bigram = Bigram(ids["train"], V).tune(ids["val"])
    spec["bigram_lambda"] = bigram.lam
    sets = {s: lm_windows(ids[s], bigram, window, max(1, window // 2) if s == "train" else window) for s in SPLITS}
    return TextData(sets["train"], sets["val"], sets["test"], spec, vocab_size=V, window=window)


def load_for(options, target: str | None = None) -> TextData:
    return load(options.data, options.tokens, options.window, options.vocab)


def read_labeled(spec: dict, path: str) -> TensorDataset:
    """All of a user's text as language-model windows. The run's training text is not kept, so the
    baseline is a bigram fitted on this text itself: in-sample, so a harder yardstick than on the splits."""
    texts = read_corpus(path) if Path(path).exists() else corpus(path)
    ids = np.asarray(encode(spec, "\n\n".join(texts.values())), dtype=np.int64)
    bigram = Bigram(ids, vocab_size(spec))
    windows = lm_windows(ids, bigram, spec["window"], spec["window"])
    windows.bigram_fitted_on = "this text itself (in-sample)"  # what `baseline` says of its column
    return windows


def read_inputs(spec: dict, text: str) -> tuple[Tensor, list[str]]:
    """Sentences to classify (planted-topics runs): one per line of `text` (or the file it names)."""
    lines = read_lines(Path(text)) if is_file(text) else [text]
    lines = [s for s in lines if s.strip()]
    return pad_rows([encode(spec, s) for s in lines], spec["window"]), lines


def baseline(spec: dict, train, examples) -> tuple[str, dict[str, float]]:
    """The trivial predictor of a text run on `examples` (a split of its data), beside the model's metrics. Language
    models: the bigram every window carries (fitted on the training split; on a user's file given to `eval --data`,
    fitted on that text itself), its cross-entropy over the same real tokens the model is scored on. Topic runs: the
    training split's most frequent class (the examples' own when `train` is None)."""
    if "classes" in spec:
        labels = examples.tensors[1]
        fitted = labels if train is None else train.tensors[1]
        majority = int(torch.bincount(fitted, minlength=len(spec["classes"])).argmax())
        where = "training split" if train is not None else "data itself"
        return (f"majority class of the {where} ({spec['classes'][majority]})",
                {"accuracy": (labels == majority).float().mean().item()})
    _, y, nll = examples.tensors
    real = y != PAD
    ce = (nll * real).sum().item() / max(int(real.sum()), 1)
    fitted_on = getattr(examples, "bigram_fitted_on", "the training split")
    return f"bigram fitted on {fitted_on}", {"cross_entropy": ce, "perplexity": math.exp(min(ce, 50.0)),
                                             "ce_vs_bigram": 1.0}


def check_generation(length: int | None, temperature: float, top_k: int, seed: int) -> None:
    """One line for a generation option out of its range, naming it as the user spelled it."""
    def whole(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)
    if length is not None and not (whole(length) and 1 <= length <= MAX_LENGTH):
        raise DeepAtlasError(f"{option('length')} {length}: give a number of tokens from 1 to {MAX_LENGTH:,}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0 \
            or not math.isfinite(temperature):
        raise DeepAtlasError(f"{option('temperature')} {temperature}: give a number >= 0 (0 picks the likeliest "
                             "token, 1 samples the model's distribution, higher is more random)")
    if not (whole(top_k) and top_k >= 0):
        raise DeepAtlasError(f"{option('top_k')} {top_k}: give a whole number >= 0 (0: all tokens)")
    if not (whole(seed) and 0 <= seed < 2**32):
        raise DeepAtlasError(f"{option('seed')} {seed}: give a whole number from 0 to {2**32 - 1}")


@torch.no_grad()
def predict(objective, spec: dict, inputs, *, length: int | None = None, temperature: float = 0.8, top_k: int = 20,
            seed: int = 0) -> list[dict]:
    """Classify sentences (topic runs) or continue prompts (language models with `generate`): `inputs` is the prompt
    (a str) or a list of prompts; a row per prompt. `length` tokens are drawn (default 200 characters or 60
    subwords/words) from softmax(logits / temperature) among the top_k likeliest (0: all; temperature 0: the
    likeliest, greedy), with random numbers seeded by `seed` and the prompt (`prompt_seed`): the same seed gives the
    same continuation of a prompt wherever it stands in the list, and the user's global torch seed is left as it was."""
    model = objective.model
    device = next(objective.parameters()).device
    if "classes" in spec:
        x, names = read_inputs(spec, inputs)
        probs = objective(x.to(device)).softmax(-1)
        return [{"input": n, "predicted": spec["classes"][int(p.argmax())],
                 "probabilities": dict(zip(spec["classes"], p.tolist()))} for n, p in zip(names, probs)]
    check_generation(length, temperature, top_k, seed)
    if not hasattr(model, "generate"):
        raise DeepAtlasError(f"{type(model).__name__} does not generate text; predict continues text with a GPT run")
    prompts = [inputs] if isinstance(inputs, str) else list(inputs)
    if not all(isinstance(p, str) for p in prompts):
        raise DeepAtlasError("a prompt is text (a str), or a list of them")
    steps = length or (200 if spec["tokens"] == "char" else 60)
    return [continue_prompt(model, spec, p, steps, temperature, top_k, seed, device) for p in prompts]


def prompt_seed(seed: int, ids: list[int]) -> int:
    """The random stream of one prompt: `seed` mixed with the tokens the model reads. Two prompts sampled with the
    same draws are coupled: once their recent contexts agree (the same last character, for a model that looks little
    further back) they take the same tokens from then on and stay the same text, which reads as if the prompt were
    ignored. Each prompt gets its own draws instead; the same seed and prompt still give the same continuation."""
    digest = hashlib.sha256(f"{seed}:{ids}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # torch.manual_seed takes up to 2^63 - 1


def continue_prompt(model, spec: dict, text: str, steps: int, temperature: float, top_k: int, seed: int,
                    device: torch.device) -> dict:
    """One prompt's row. A model with a `block_size` reads only the last block_size tokens of its context (GPT crops
    it), so only those are handed to it: the rest of a long prompt is encoded, never computed on. Any other reads
    its whole prompt, which may then be MAX_PROMPT_TOKENS long at most."""
    ids = encode(spec, text) or [UNK]
    context = getattr(model, "block_size", None)
    if context:
        ids = ids[-context:]  # all the model reads: generate crops to the last block_size tokens
    elif len(ids) > MAX_PROMPT_TOKENS:
        raise DeepAtlasError(f"the prompt is {len(ids):,} tokens; {type(model).__name__} reads all of its prompt, "
                             f"which may be {MAX_PROMPT_TOKENS:,} tokens at most (give its end)")
    # a private random state for this prompt alone (the caller's is restored afterwards)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(prompt_seed(seed, ids))
        out = model.generate(torch.tensor([ids], device=device), steps, temperature=temperature, top_k=top_k)
    continuation = decode(spec, out[0, len(ids):].tolist())
    if spec["tokens"] == "word":  # words are joined by spaces, the prompt's last one too
        continuation = " " + continuation
    return {"input": text, "predicted": text + continuation, "continuation": continuation}
