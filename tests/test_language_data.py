"""Text data (stdlib-text, planted-semantics/topics, users' files), the bigram yardstick, the
next-token objective and the engine pieces the language family added (#n weights, warm-up)."""
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from deepatlas.catalog import Train
from deepatlas.data import planted, text
from deepatlas.engine.loop import Scaling, evaluate_loader, lr_factor, make_fabric
from deepatlas.errors import DeepAtlasError
from deepatlas.tasks.language import NextToken


def test_stdlib_corpus_is_split_by_module_and_recorded():
    corpus = text.stdlib_corpus()
    sizes = {s: len(t) for s, t in corpus.items()}
    assert sizes["train"] > 500_000 and sizes["val"] > 50_000 and sizes["test"] > 50_000
    assert text.module_split("asyncio") == text.module_split("asyncio")  # a module's docstrings stay together
    assert ">>> " not in corpus["train"]  # doctests dropped
    data = text.load("stdlib-text", "char")
    assert data.spec["python"].count(".") == 2 and len(data.spec["sha256"]) == 64


def test_clean_docstring_drops_doctests_and_blank_runs():
    doc = "Add numbers.\n\n\n\n>>> add(1, 2)\n3\n\nMore text."
    assert text.clean_docstring(doc) == "Add numbers.\n\nMore text."


@pytest.mark.parametrize("tokens", ["char", "bpe", "word"])
def test_views_round_trip_and_windows_shift_by_one(tokens):
    data = text.load("stdlib-text", tokens)
    spec = data.spec
    sample = "Return the number of items in the sequence."
    ids = text.encode(spec, sample)
    back = text.decode(spec, ids)
    assert back == sample if tokens != "word" else back == "Return the number of items in the sequence ."
    x, y, baseline = data.test[:8]
    assert x.shape == y.shape == baseline.shape == (8, data.dims["block_size"])
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x moved on by one token
    assert (baseline > 0).all() and data.dims["vocab_size"] == text.vocab_size(spec)
    assert data.spec["vocab" if tokens != "bpe" else "bpe"]


def test_bpe_is_learned_deterministically_and_compresses():
    train = text.stdlib_corpus()["train"][:200_000]
    a, b = text.make_spec("s", "bpe", 400, train), text.make_spec("s", "bpe", 400, train)
    assert a == b
    sample = text.stdlib_corpus()["test"][:5000]
    assert len(text.encode(a, sample)) < 0.7 * len(sample)  # ~140 merges already save 30%


def test_bigram_is_a_normalized_distribution_and_fits_better_than_unigram():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 6, 5000)
    ids[1::2] = (ids[::2] + 1) % 6  # every even position determines the next
    bigram = text.Bigram(ids, 6)
    for a in range(6):
        p = np.exp(-bigram.nll(np.full(6, a), np.arange(6)))
        assert p.sum() == pytest.approx(1.0, abs=1e-9)
    bigram.tune(ids)
    unigram_ce = -np.log(bigram.unigram[ids[1:]]).mean()
    assert bigram.nll(ids[:-1], ids[1:]).mean() < unigram_ce - 0.3


def test_planted_topics_and_corpus():
    corpus = planted.generate()
    assert corpus is planted.generate()
    words = set(" ".join(corpus.sentences).split())
    assert set(corpus.categories) <= words and all(a in words and b in words
                                                   for pairs in corpus.relations.values() for a, b in pairs)
    idx = planted.split(len(corpus.sentences))
    assert not set(idx["train"]) & set(idx["test"]) and sum(map(len, idx.values())) == len(corpus.sentences)
    data = text.load("planted-topics")
    x, label = data.test[:5]
    assert data.dims["n_classes"] == 8 and x.shape == (5, data.dims["block_size"])
    assert [corpus.topics[i] for i in idx["test"][:5]] == label.tolist()


def test_users_corpus_file_and_folder(tmp_path):
    (tmp_path / "a.txt").write_text("\n\n".join(f"Paragraph number {i} says something." for i in range(40)))
    (tmp_path / "b.txt").write_text("Another file.\n\nWith two paragraphs.")
    data = text.load(str(tmp_path), "char", 16)
    assert len(data.train) > len(data.val) > 0
    one = text.load(str(tmp_path / "a.txt"), "word", 4)
    assert "Paragraph" in one.spec["vocab"]
    (tmp_path / "tiny.txt").write_text("too short")
    with pytest.raises(DeepAtlasError, match="too little text"):
        text.corpus(str(tmp_path / "tiny.txt"))
    with pytest.raises(DeepAtlasError, match="unknown text data"):
        text.corpus("no-such-corpus")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe" * 600)
    with pytest.raises(DeepAtlasError, match="not UTF-8"):
        text.corpus(str(tmp_path / "bad.txt"))


class LearnedBigram(nn.Module):
    """logits(y | x_t) from x_t alone: the best it can do is the data's bigram."""

    def __init__(self, V):
        super().__init__()
        self.table = nn.Embedding(V, V)

    def forward(self, x):
        return self.table(x)


def test_next_token_objective_measures_against_the_bigram():
    data = text.load("planted-semantics", "char", 32)
    V = data.dims["vocab_size"]
    objective = NextToken(LearnedBigram(V))
    opt = torch.optim.Adam(objective.parameters(), lr=0.1)
    loader = DataLoader(data.train, batch_size=256, shuffle=True, generator=torch.Generator().manual_seed(0))
    for _, batch in zip(range(150), loader):
        loss, _ = objective.training_step(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    fabric = make_fabric(Scaling(devices=1))
    logs = evaluate_loader(fabric, objective, DataLoader(data.test, batch_size=100))
    untrained = evaluate_loader(fabric, NextToken(LearnedBigram(V)), DataLoader(data.test, batch_size=100))
    # a learned bigram ends close to the smoothed count bigram, far from an untrained one
    assert 0.9 < logs["ce_vs_bigram"] < 1.1 < untrained["ce_vs_bigram"]
    assert logs["perplexity"] == pytest.approx(math.exp(logs["cross_entropy"]), rel=1e-6)
    assert "cross_entropy#n" not in logs


def test_evaluate_weighs_by_counts():
    class Fixed(nn.Module):
        def validation_step(self, batch):
            (x,) = batch
            real = x > 0
            return {"score": (x * real).sum() / real.sum(), "score#n": real.sum()}
    x = torch.tensor([[1.0, 1.0, 1.0], [4.0, 0.0, 0.0]])  # batch 1: three values of 1, batch 2: one 4
    fabric = make_fabric(Scaling(devices=1))
    logs = evaluate_loader(fabric, Fixed(), DataLoader(torch.utils.data.TensorDataset(x), batch_size=1))
    assert logs["score"] == pytest.approx(7 / 4)  # per value, not the mean of the batch means (2.5)


def test_warmup_schedules():
    recipe = Train(schedule="inverse_sqrt", warmup=100)
    assert lr_factor(recipe, 49, 1000) == pytest.approx(0.5)
    assert lr_factor(recipe, 99, 1000) == pytest.approx(1.0)
    assert lr_factor(recipe, 399, 1000) == pytest.approx(0.5)  # sqrt(100 / 400)
    cosine = Train(schedule="cosine", warmup=10)
    assert lr_factor(cosine, 4, 100) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 4 / 100)))


def test_predict_continues_a_word_prompt_with_a_space():
    data = text.load("planted-semantics", "word", 8)
    spec = data.spec
    cat = spec["vocab"].index("cat")

    class Repeats(nn.Module):  # continues any prompt with "cat cat"
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def generate(self, idx, steps, temperature=1.0, top_k=0):
            return torch.cat([idx, torch.full((1, steps), cat)], 1)

    objective = NextToken(Repeats())
    row = text.predict(objective, spec, "the dog", length=2)[0]
    assert row["predicted"] == "the dog cat cat"
