"""Word embeddings: the word data (vocabulary, queries, users' text), the shared sampling helpers
(unigram^0.75 table, subsampling, shrunk windows, negative-sampling loss), the purity@5 and analogy
metrics on hand-built vectors, and "word2vec" learning planted-semantics in both modes."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import deepatlas
from deepatlas.catalog import Data
from deepatlas.data import planted, words
from deepatlas.errors import DeepAtlasError
from deepatlas.tasks.embedding import (
    EmbeddingObjective,
    context_pairs,
    context_windows,
    counted_negative_sampling_loss,
    keep_probability,
    negative_sampling_loss,
    noise_distribution,
    subsample,
    unigram_table,
)


@pytest.fixture(scope="module")
def planted_data():
    return words.load("planted-semantics")


# ---- data -----------------------------------------------------------------------------------------

def test_vocabulary_ids_and_round_trip(planted_data):
    spec = planted_data.spec
    vocab, counts = spec["vocab"], spec["counts"]
    assert vocab[:words.N_SPECIALS] == words.SPECIALS and vocab[words.PAD] == "<pad>" and vocab[words.UNK] == "<unk>"
    assert counts[:words.N_SPECIALS] == [0] * words.N_SPECIALS
    assert all(a >= b > 0 for a, b in zip(counts[words.N_SPECIALS:], counts[words.N_SPECIALS + 1:]))
    assert len(set(vocab)) == len(vocab) == planted_data.dims["vocab_size"]
    corpus = planted.generate()
    train = [corpus.sentences[i] for i in planted.split(len(corpus.sentences))["train"]]
    x = planted_data.train.tensors[0]                                         # (N, L)
    assert x.shape == (len(train), max(len(s.split()) for s in train))
    for row, sentence in zip(x[:50].tolist(), train[:50]):                    # ids decode back to the sentence
        assert " ".join(vocab[i] for i in row if i != words.PAD) == sentence
        assert words.PAD not in row[:len(sentence.split())]
    assert sum(counts) == sum(len(s.split()) for s in train)
    category = spec["category"]
    assert sum(c >= 0 for c in category) == 96 and category[vocab.index("kitten")] == spec["category_names"].index("young")


def test_queries_split_val_and_test(planted_data):
    val_kind, val_ids = planted_data.val.tensors
    test_kind, test_ids = planted_data.test.tensors
    assert (val_kind == words.PURITY).sum() == (test_kind == words.PURITY).sum() == 48
    assert (val_kind == words.ANALOGY).sum() == (test_kind == words.ANALOGY).sum() == 132
    as_set = lambda kind, ids, k: {tuple(r) for r in ids[kind == k].tolist()}
    assert not as_set(val_kind, val_ids, words.ANALOGY) & as_set(test_kind, test_ids, words.ANALOGY)
    assert not as_set(val_kind, val_ids, words.PURITY) & as_set(test_kind, test_ids, words.PURITY)
    vocab = planted_data.spec["vocab"]
    young = dict(planted.YOUNG_OF) | dict(planted.CAPITAL_OF)
    for a, b, c, d in torch.cat([val_ids, test_ids])[torch.cat([val_kind, test_kind]) == words.ANALOGY].tolist():
        assert young[vocab[a]] == vocab[b] and young[vocab[c]] == vocab[d] and a != c


def test_users_text_file_and_folder(tmp_path):
    text = " ".join(f"The {w} sat on the mat. A {w} ran away!" for w in ["cat", "dog", "fox", "owl"] * 5)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text(text)
    (tmp_path / "corpus" / "b.txt").write_text("Another sentence here.\n\nAnd one more, with words: x-ray and don't.")
    data = words.load_for(Data(data=str(tmp_path / "corpus"), tokens="word"))
    vocab = data.spec["vocab"]
    assert vocab[words.N_SPECIALS] == "the" and {"x-ray", "don't", "cat"} <= set(vocab)
    assert len(data.train) + len(data.val) + len(data.test) == 43  # 40 + 3 (split after . ! ? ; :)
    small = words.load_for(Data(data=str(tmp_path / "corpus" / "a.txt"), tokens="word", vocab=3))
    assert small.spec["vocab"] == words.SPECIALS + ["the", "a", "away"]   # the 3 most frequent, ties alphabetical
    rows = small.train.tensors[0]
    assert rows.max() < len(small.spec["vocab"]) and words.UNK not in rows  # dropped, not UNK


def test_bad_files_give_one_clear_error(tmp_path):
    with pytest.raises(DeepAtlasError, match="no such file"):
        words.load(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DeepAtlasError, match="empty"):
        words.load(str(tmp_path / "empty.txt"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(DeepAtlasError, match="no .txt files"):
        words.load(str(tmp_path / "folder"))
    with pytest.raises(DeepAtlasError, match="unknown dataset"):
        words.load("no-such-corpus")


# ---- sampling helpers ----------------------------------------------------------------------------

def test_negative_sampling_table_follows_unigram_to_the_three_quarters():
    counts = torch.tensor([0.0] * words.N_SPECIALS + [1000, 300, 100, 10, 1])
    expected = counts ** 0.75 / (counts ** 0.75).sum()
    assert torch.allclose(noise_distribution(counts), expected)
    table = unigram_table(counts)
    torch.manual_seed(0)
    draws = table[torch.randint(len(table), (400_000,))]
    empirical = torch.bincount(draws, minlength=len(counts)).float() / len(draws)
    assert torch.allclose(empirical, expected, atol=3e-3)
    assert empirical[:words.N_SPECIALS].sum() == 0
    unigram = counts / counts.sum()                                           # plain unigram is far off
    assert (empirical - unigram).abs().max() > 0.05 and empirical[-1] > 4 * unigram[-1]


def test_subsampling_keeps_each_word_at_the_formula_rate():
    t = 1e-2
    counts = torch.tensor([0.0] * words.N_SPECIALS + [5000, 1000, 10, 1])   # frequencies .83, .17, .0017, .00017
    keep = keep_probability(counts, t)
    f = counts / counts.sum()
    assert torch.allclose(keep[5:7], (t / f[5:7]).sqrt() + t / f[5:7])
    assert keep[5] < keep[6] < 1 and keep[7] == keep[8] == 1              # frequent words dropped most, rare kept
    assert torch.equal(keep_probability(counts, 0.0), torch.ones(len(counts)))
    torch.manual_seed(0)
    x = torch.tensor([[5, 6, 7, 8, 0, 0]]).repeat(20_000, 1)
    out = subsample(x, keep)
    for w in (5, 6, 7, 8):
        assert abs((out == w).sum().item() / 20_000 - keep[w].item()) < 0.01
    kept = out != words.PAD                                                  # kept words close ranks, in order
    assert torch.equal(kept, torch.arange(6)[None] < kept.sum(1, keepdim=True))
    order = torch.where(kept, out, 99)
    assert (order[:, 1:] >= order[:, :-1]).all()


def test_context_pairs_are_exactly_the_window_and_never_pad():
    x = torch.tensor([[5, 6, 7, 8, 0, 0], [9, 10, 0, 0, 0, 0]])
    center, context = context_pairs(x, 2, shrink=False)
    pairs = sorted(zip(center.tolist(), context.tolist()))
    assert pairs == sorted([(5, 6), (5, 7), (6, 5), (6, 7), (6, 8), (7, 5), (7, 6), (7, 8), (8, 6), (8, 7),
                            (9, 10), (10, 9)])
    torch.manual_seed(0)
    x = torch.arange(5, 25)[None].repeat(2000, 1)                             # distance = |id difference|
    center, context = context_pairs(x, 4)
    distance = (center - context).abs()
    assert (distance >= 1).all() and (distance <= 4).all() and (context != words.PAD).all()
    # each center's window is b ~ U{1..4}: distance d is kept with probability (4 - d + 1) / 4
    inner = (center >= 9) & (center <= 20)                                    # centers with all 8 neighbours
    share = torch.bincount(distance[inner], minlength=5)[1:].float()
    n_centers = 2000 * 12
    assert torch.allclose(share / (2 * n_centers), torch.tensor([1.0, 0.75, 0.5, 0.25]), atol=0.02)
    _, valid = context_windows(torch.tensor([[0, 5, 0]]), 1, shrink=False)
    assert not valid.any()                                                    # PAD is neither center nor context


def test_negative_sampling_loss_formula():
    torch.manual_seed(0)
    v, pos, neg = torch.randn(7, 4), torch.randn(7, 4), torch.randn(7, 3, 4)
    sig = torch.sigmoid
    expected = -sig((v * pos).sum(-1)).log() - sig(-(neg * v[:, None]).sum(-1)).log().sum(-1)
    assert torch.allclose(negative_sampling_loss(v, pos, neg), expected, atol=1e-5)
    mask = torch.tensor([[1.0, 0.0, 1.0]]).repeat(7, 1)
    expected = -sig((v * pos).sum(-1)).log() - (sig(-(neg * v[:, None]).sum(-1)).log() * mask).sum(-1)
    assert torch.allclose(negative_sampling_loss(v, pos, neg, mask), expected, atol=1e-5)
    zero = torch.zeros(2, 4)
    assert torch.allclose(negative_sampling_loss(zero, zero, torch.zeros(2, 5, 4)), torch.full((2,), 6 * math.log(2)))


def test_counted_loss_equals_the_sum_over_pairs():
    torch.manual_seed(0)
    V, P, k = 12, 300, 4
    U, W = torch.randn(V, 6, requires_grad=True), torch.randn(V, 6, requires_grad=True)
    inputs, observed, noise = torch.randint(5, V, (P,)), torch.randint(5, V, (P,)), torch.randint(5, V, (P, k))
    assert (noise == observed[:, None]).any()                                # some noise words are skipped
    counted = counted_negative_sampling_loss(U, W, inputs, observed, noise)
    grads = torch.autograd.grad(counted, [U, W])
    pairs = negative_sampling_loss(U[inputs], W[observed], W[noise], (noise != observed[:, None]).float()).sum()
    assert torch.allclose(counted, pairs, rtol=1e-5)
    for a, b in zip(grads, torch.autograd.grad(pairs, [U, W])):
        assert torch.allclose(a, b, atol=1e-4)


def hand_loss(mode: str) -> tuple[float, float]:
    """word2vec's loss on the sentence (5, 6, 7) with a window of 1 and no noise words, and the same by hand."""
    torch.manual_seed(0)
    model = deepatlas.create_model("word2vec", vocab_size=8, dim=3, mode=mode, context=1, negatives=0, sample=0.0)
    nn.init.normal_(model.input.weight)
    nn.init.normal_(model.output.weight)
    objective = deepatlas.catalog.get("word2vec").objective(model)
    loss = objective.training_step([torch.tensor([[5, 6, 7, 0]])])[0].item()
    u, w = model.input.weight.detach(), model.output.weight.detach()
    nll = lambda h, o: -torch.sigmoid(h @ w[o]).log().item()
    if mode == "skipgram":   # each word predicts its neighbours from its own vector
        expected = (nll(u[5], 6) + nll(u[6], 5) + nll(u[6], 7) + nll(u[7], 6)) / 4
    else:                    # the average of the neighbours predicts the word
        expected = (nll(u[6], 5) + nll((u[5] + u[7]) / 2, 6) + nll(u[6], 7)) / 3
    return loss, expected


@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
def test_word2vec_loss_by_hand(mode):
    loss, expected = hand_loss(mode)
    assert loss == pytest.approx(expected, rel=1e-5)


# ---- metrics on hand-built vectors ------------------------------------------------------------------

class Fixed(nn.Module):
    def __init__(self, vectors: torch.Tensor):
        super().__init__()
        self.cfg = SimpleNamespace(vocab_size=len(vectors))
        self.weight = nn.Parameter(vectors)

    def vectors(self):
        return self.weight


def scores(vectors: torch.Tensor, data) -> dict[str, float]:
    objective = EmbeddingObjective(Fixed(vectors))
    objective.prepare(data)
    out = {}
    for split in (data.val, data.test):
        logs = objective.validation_step(split.tensors)
        for k in ("purity@5", "analogy"):
            out[k] = out.get(k, 0) + logs[k].item() * logs[f"{k}#n"].item()
            out[f"{k}#n"] = out.get(f"{k}#n", 0) + logs[f"{k}#n"].item()
    return {k: out[k] / out[f"{k}#n"] for k in ("purity@5", "analogy")}


def test_metrics_on_perfect_and_random_vectors(planted_data):
    spec = planted_data.spec
    vocab, category = spec["vocab"], spec["category"]
    pair_of = {w: i for pairs in planted.RELATIONS.values() for i, pair in enumerate(pairs) for w in pair}
    V, n_cat = len(vocab), len(spec["category_names"])
    perfect = torch.zeros(V, n_cat + 12 + V)   # a category direction + half a pair direction; others apart
    for i, w in enumerate(vocab):
        if category[i] >= 0:
            perfect[i, category[i]] = 1.0
            perfect[i, n_cat + pair_of.get(w, 0)] = 0.5 if w in pair_of else 0.0
        else:
            perfect[i, n_cat + 12 + i] = 1.0
    assert scores(perfect, planted_data) == {"purity@5": 1.0, "analogy": 1.0}
    torch.manual_seed(0)
    random = scores(torch.randn(V, 50), planted_data)
    chance = 11 / (V - words.N_SPECIALS - 1)                                 # 11 category mates among the rest
    assert random["purity@5"] < 3 * chance and random["analogy"] < 0.05
    shuffled = perfect[torch.randperm(V)]                                    # right vectors on the wrong words
    assert scores(shuffled, planted_data)["purity@5"] < 0.2


def test_nearest_excludes_specials_and_the_word_itself():
    vectors = torch.eye(8)
    vectors[5] = vectors[6] + 0.1
    objective = EmbeddingObjective(Fixed(vectors))
    _, ids = objective.nearest(vectors[[6]], 3, torch.tensor([[6]]))
    assert ids[0, 0] == 5 and set(ids[0].tolist()) <= {5, 7}


# ---- word2vec ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def skipgram_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "word2vec"
    metrics = deepatlas.train("word2vec", out=out, overrides={"epochs": "2"})
    return out, metrics


def test_word2vec_skipgram_learns_planted_semantics(skipgram_run):
    _, metrics = skipgram_run
    assert metrics["test"]["purity@5"] > 0.6          # chance ≈ 0.04
    assert metrics["test"]["analogy"] > 0.6           # chance < 0.01


def test_word2vec_cbow_learns_planted_semantics(tmp_path):
    metrics = deepatlas.train("word2vec", out=tmp_path / "cbow", overrides={"epochs": "2", "mode": "cbow"})
    assert metrics["test"]["purity@5"] > 0.6 and metrics["test"]["analogy"] > 0.6


def test_word2vec_init_and_untrained_metrics(planted_data):
    torch.manual_seed(0)
    model = deepatlas.create_model("word2vec", vocab_size=planted_data.dims["vocab_size"], dim=16)
    assert model.vectors().shape == (planted_data.dims["vocab_size"], 16)
    assert model.output.weight.abs().sum() == 0 and model.input.weight.abs().max() <= 0.5 / 16
    assert model(torch.tensor([[5, 6]])).shape == (1, 2, 16)
    assert scores(model.vectors().detach(), planted_data)["purity@5"] < 0.2


def test_word2vec_validation_loss_is_repeatable(planted_data):
    torch.manual_seed(0)
    model = deepatlas.create_model("word2vec", vocab_size=planted_data.dims["vocab_size"], dim=16)
    nn.init.normal_(model.output.weight)
    objective = deepatlas.catalog.get("word2vec").objective(model)
    objective.prepare(planted_data)
    batch = [planted_data.train.tensors[0][:64]]
    first, second = objective.validation_step(batch), objective.validation_step(batch)
    assert set(first) == {"loss"} and first["loss"] == second["loss"]
    assert objective.train().training_step(batch)[0] != objective.training_step(batch)[0]  # fresh draws


def test_predict_lists_neighbours_of_the_same_category(skipgram_run):
    run, _ = skipgram_run
    result = deepatlas.predict(run, "red, hammer  bus")
    assert result.names == ["red", "hammer", "bus"]
    spec = words.load("planted-semantics").spec
    category = dict(zip(spec["vocab"], spec["category"]))
    for word, details in zip(result.names, result.details):
        neighbours = [w for w, _ in details["neighbours"]]
        assert len(neighbours) == 10 and word not in neighbours
        assert sum(category[w] == category[word] for w in neighbours[:5]) >= 4
        cosines = [c for _, c in details["neighbours"]]
        assert cosines == sorted(cosines, reverse=True)
        assert result.predicted[result.names.index(word)] == ", ".join(neighbours)
    with pytest.raises(DeepAtlasError, match="'zebra' is not in the vocabulary of this run"):
        deepatlas.predict(run, "zebra")
