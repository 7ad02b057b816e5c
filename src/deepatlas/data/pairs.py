"""Translation data: source -> target string pairs, read character by character.

Every item is (src, tgt), two padded rows of token ids:
    src (S,) long   the source characters, then PAD
    tgt (T,) long   BOS, the target characters, EOS, then PAD
The four special ids are the same in every vocabulary: PAD 0, BOS 1, EOS 2, UNK 3 (a character
never seen in training). The vocabularies are the sorted characters of the training split, kept in
the JSON `spec`, so `predict` and `eval --data` encode new text the way training did.

Datasets:
    dates       date-format translation: a calendar date written in one of many surface forms
                ("21 November 2026", "11/21/26", "Saturday, Nov 21, 2026", "2026.11.21", ...)
                -> its ISO form "2026-11-21". Dates are drawn from 1950-01-01 .. 2049-12-31, so a
                two-digit year is never ambiguous: 50..99 mean 1950..1999 and 00..49 mean
                2000..2049. Weekday names are the real weekday of the date. Generated from a fixed
                seed; the test, val and train splits (1,000 / 1,000 / 30,000) use disjoint calendar
                dates, so the test measures generalization to dates never seen in any form.
    a TSV file  `--data pairs.tsv`: one `source<TAB>target` pair per line (no header; blank lines
                are skipped, spaces around each field trimmed), split 80/10/10 with the fixed split seed.

`predict` translates sources of at most MAX_SOURCE characters (the encoder reads every one, and an
attention model compares every output step with every one), PREDICT_BATCH of them at a time.
"""
from __future__ import annotations

import datetime
import random
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from deepatlas.data import SPLIT_SEED, Splits
from deepatlas.errors import DeepAtlasError

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
EMBEDDED = ["dates"]
MAX_SOURCE = 1000
"""the longest source `predict` translates, in characters"""
PREDICT_BATCH = 64
"""sources decoded together by `predict`"""

# ---- the dates generator ---------------------------------------------------------------------

DATES_SEED = 4
DATES_SIZES = {"test": 1_000, "val": 1_000, "train": 30_000}
FIRST_DAY, LAST_DAY = datetime.date(1950, 1, 1), datetime.date(2049, 12, 31)
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]  # date.weekday() order
# Surface forms. Fields: d/dd day (21, 05), m/mm month number, yy/yyyy year, Month/Mon/MON/month names,
# Weekday/Wkd/weekday. Each form reads back to one date: slashes are month-first, dots and dashes day-first
# unless the four-digit year leads.
FORMATS = [
    "{d} {Month} {yyyy}",            # 21 November 2026
    "{mm}/{dd}/{yy}",                # 11/21/26
    "{Weekday}, {Mon} {d}, {yyyy}",  # Saturday, Nov 21, 2026
    "{yyyy}.{mm}.{dd}",              # 2026.11.21
    "{Mon} {d} {yyyy}",              # Nov 21 2026
    "{dd}.{mm}.{yyyy}",              # 21.11.2026
    "{Month} {d}, {yyyy}",           # November 21, 2026
    "{Mon} {d}, {yyyy}",             # Nov 21, 2026
    "{d} {Mon} {yy}",                # 21 Nov 26
    "{m}/{d}/{yyyy}",                # 11/21/2026
    "{Wkd} {d} {Mon} {yyyy}",        # Sat 21 Nov 2026
    "{weekday} {month} {d} {yyyy}",  # saturday november 21 2026
    "{yyyy}{mm}{dd}",                # 20261121
    "{MON} {dd}, {yy}",              # NOV 21, 26
    "{d}-{Mon}-{yyyy}",              # 21-Nov-2026
    "{Weekday} {d} {Month} {yyyy}",  # Saturday 21 November 2026
    "{Wkd}, {d}.{m}.{yyyy}",         # Sat, 21.11.2026
    "{yyyy}/{mm}/{dd}",              # 2026/11/21
]


def format_date(day: datetime.date, form: str) -> str:
    """`day` written in surface form `form` (English names, whatever the machine's locale)."""
    month, weekday = MONTHS[day.month - 1], WEEKDAYS[day.weekday()]
    return form.format(d=day.day, dd=f"{day.day:02d}", m=day.month, mm=f"{day.month:02d}",
                       yy=f"{day.year % 100:02d}", yyyy=day.year, Month=month, Mon=month[:3],
                       MON=month[:3].upper(), month=month.lower(), Weekday=weekday, Wkd=weekday[:3],
                       weekday=weekday.lower())


def date_pairs(n: int, days: list[datetime.date], rng: random.Random) -> list[tuple[str, str]]:
    """`n` pairs (a surface form, the ISO date), cycling through `days` with a random form each."""
    return [(format_date(days[i % len(days)], rng.choice(FORMATS)), days[i % len(days)].isoformat())
            for i in range(n)]


def dates_splits() -> dict[str, list[tuple[str, str]]]:
    """The fixed dates splits: every calendar date belongs to one split only."""
    rng = random.Random(DATES_SEED)
    days = [FIRST_DAY + datetime.timedelta(i) for i in range((LAST_DAY - FIRST_DAY).days + 1)]
    rng.shuffle(days)
    n_test, n_val = DATES_SIZES["test"], DATES_SIZES["val"]
    parts = {"test": days[:n_test], "val": days[n_test:n_test + n_val], "train": days[n_test + n_val:]}
    return {name: date_pairs(DATES_SIZES[name], parts[name], rng) for name in ("test", "val", "train")}


# ---- users' TSV files -----------------------------------------------------------------------

def read_tsv(path: str | Path) -> list[tuple[str, str]]:
    """`source<TAB>target` pairs, one per line; one clear error naming the file and line."""
    path = Path(path)
    if path.is_dir():
        raise DeepAtlasError(f"{path}: a folder; expected a text file of source<TAB>target lines")
    if not path.is_file():
        raise DeepAtlasError(f"{path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise DeepAtlasError(f"{path}: not a UTF-8 text file ({err.reason} at byte {err.start})") from None
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise DeepAtlasError(f"{path}: line {number}: expected source<TAB>target, found "
                                 f"{len(fields) - 1} tab(s)")
        source, target = fields[0].strip(), fields[1].strip()
        if not source or not target:
            raise DeepAtlasError(f"{path}: line {number}: empty {'source' if not source else 'target'}")
        pairs.append((source, target))
    if not pairs:
        raise DeepAtlasError(f"{path}: no source<TAB>target pairs (the file is empty)")
    return pairs


def split_pairs(pairs: list[tuple[str, str]], where: str) -> dict[str, list[tuple[str, str]]]:
    """A fixed 80/10/10 train/val/test split (the split seed, whatever the run's seed)."""
    if len(pairs) < 10:
        raise DeepAtlasError(f"{where}: {len(pairs)} pairs; need at least 10 to split 80/10/10")
    order = list(range(len(pairs)))
    random.Random(SPLIT_SEED).shuffle(order)
    n_val = n_test = max(1, len(pairs) // 10)
    picked = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    return {name: [pairs[i] for i in idx] for name, idx in picked.items()}


# ---- vocabularies and encoding ------------------------------------------------------------------

def make_spec(train: list[tuple[str, str]], source: str) -> dict:
    """Character vocabularies of the training split (specials first, then sorted characters)."""
    return {"source": source, "tokens": "char",
            "src_vocab": SPECIALS + sorted({c for s, _ in train for c in s}),
            "tgt_vocab": SPECIALS + sorted({c for _, t in train for c in t}),
            "max_tgt_len": max(len(t) for _, t in train) + 1}  # characters + EOS


def encode(texts: list[str], vocab: list[str], wrap: bool = False, width: int = 0) -> Tensor:
    """Strings -> (N, L) long ids padded with PAD; `wrap` adds BOS ... EOS. L is the longest (or `width`)."""
    index = {c: i for i, c in enumerate(vocab)}
    rows = [[index.get(c, UNK) for c in text] for text in texts]
    if wrap:
        rows = [[BOS, *row, EOS] for row in rows]
    length = max(width, *map(len, rows))
    return torch.tensor([row + [PAD] * (length - len(row)) for row in rows], dtype=torch.long)


def decode(tokens: Tensor, vocab: list[str]) -> list[str]:
    """(N, L) ids -> strings, stopping at the first EOS; PAD and BOS are dropped, UNK shows as '?'."""
    texts = []
    for row in tokens.tolist():
        chars = []
        for t in row:
            if t == EOS:
                break
            if t >= len(SPECIALS):
                chars.append(vocab[t])
            elif t == UNK:
                chars.append("?")
        texts.append("".join(chars))
    return texts


def to_dataset(pairs: list[tuple[str, str]], spec: dict) -> TensorDataset:
    sources, targets = zip(*pairs)
    return TensorDataset(encode(list(sources), spec["src_vocab"]), encode(list(targets), spec["tgt_vocab"], wrap=True))


class PairData(Splits):
    @property
    def dims(self) -> dict[str, int]:
        return {"src_vocab": len(self.spec["src_vocab"]), "tgt_vocab": len(self.spec["tgt_vocab"])}


def load(source: str) -> PairData:
    """The embedded "dates", or the user's TSV file of source<TAB>target pairs."""
    if source == "dates":
        splits = dates_splits()
    elif Path(source).exists() or source.endswith((".tsv", ".txt")):
        splits = split_pairs(read_tsv(source), source)
    else:
        raise DeepAtlasError(f"unknown dataset {source!r}: not a file, nor one of {', '.join(EMBEDDED)}")
    spec = make_spec(splits["train"], source)
    return PairData(*(to_dataset(splits[name], spec) for name in ("train", "val", "test")), spec)


def load_for(options, target: str | None = None) -> PairData:
    if target is not None:
        raise DeepAtlasError("--target does not apply to translation pairs (the second TSV column is the target)")
    return load(options.data)


def read_labeled(spec: dict, path: str) -> TensorDataset:
    """A TSV of pairs to evaluate on, encoded with the run's vocabularies."""
    return to_dataset(read_tsv(path), spec)


def read_sources(text: str) -> list[str]:
    """Sources to translate: `text` itself, or each non-blank line of the text file it names; each of MAX_SOURCE
    characters at most."""
    path = Path(text)
    try:
        is_file, is_dir = path.is_file(), path.is_dir()
    except OSError:  # a long literal string is not a valid path
        is_file = is_dir = False
    if is_dir:
        raise DeepAtlasError(f"{path}: a folder; give a text to translate or a text file of one source per line")
    if is_file:
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError:
            raise DeepAtlasError(f"{path}: not a UTF-8 text file") from None
        numbered = [(number, line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]
        if not numbered:
            raise DeepAtlasError(f"{path}: no lines to translate")
    else:
        numbered = [(0, text.strip())]
        if not text.strip():
            raise DeepAtlasError("nothing to translate: the input is empty")
    for number, source in numbered:
        if len(source) > MAX_SOURCE:
            where = f"{path}: line {number}" if is_file else "the text to translate"
            raise DeepAtlasError(f"{where}: {len(source):,} characters; a source may have {MAX_SOURCE:,} at most")
    return [source for _, source in numbered]


def read_inputs(spec: dict, text: str) -> tuple[Tensor, list[str]]:
    """Sources to translate (`read_sources`) -> (src (N, S) ids padded with PAD, the source strings)."""
    sources = read_sources(text)
    return encode(sources, spec["src_vocab"]), sources


def predict(objective, spec: dict, text: str, beam: int | None = None) -> list[dict]:
    """Translate `text` (a string, or a file of one source per line) with a trained Translation objective.
    Each result: {"input", "predicted"} and, when the model attends, "attention": {"source": [chars],
    "target": [chars, "<eos>"], "weights": [[one row per target token, one weight per source char]]}."""
    sources = read_sources(text)
    device = next(objective.parameters()).device
    results = []
    for start in range(0, len(sources), PREDICT_BATCH):  # a batch at a time: attention maps grow with batch × length²
        batch = sources[start:start + PREDICT_BATCH]
        src = encode(batch, spec["src_vocab"])
        tokens, attention = objective.predict(src.to(device), max_len=2 * spec["max_tgt_len"], beam=beam)
        tokens = tokens.cpu()
        for i, (source, predicted) in enumerate(zip(batch, decode(tokens, spec["tgt_vocab"]))):
            result = {"input": source, "predicted": predicted}
            if attention is not None:
                n_out = int((tokens[i] != PAD).sum())  # the output tokens, EOS included (decoders pad after EOS)
                target = [spec["tgt_vocab"][t] if t >= len(SPECIALS) else SPECIALS[t]
                          for t in tokens[i, :n_out].tolist()]
                result["attention"] = {"source": list(source), "target": target,
                                       "weights": attention[i, :n_out, :len(source)].cpu().tolist()}
            results.append(result)
    return results
