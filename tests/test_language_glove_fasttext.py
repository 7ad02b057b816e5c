"""GloVe and fastText: "glove"'s weighting function, its 1/d co-occurrence counts against hand counts, its
loss against equation (8); "fasttext"'s character n-grams and FNV-1a hash against hand values, word vectors
as sums of n-gram rows, vectors for unseen words, and both learning planted-semantics."""
import pytest
import torch
from torch import nn

import deepatlas
from deepatlas.data import words
from deepatlas.models.language import fasttext, glove
from deepatlas.models.language.glove import cooccurrence, weighting

PAD = words.PAD


@pytest.fixture(scope="module")
def planted_data():
    return words.load("planted-semantics")


def dense(i: torch.Tensor, j: torch.Tensor, x: torch.Tensor, V: int) -> torch.Tensor:
    return torch.zeros(V, V).index_put_((i, j), x)


# ---- GloVe -----------------------------------------------------------------------------------------

def test_glove_weighting_function():
    x = torch.tensor([0.0, 50.0, 100.0, 250.0])
    assert torch.allclose(weighting(x, 100.0, 0.75), torch.tensor([0.0, 0.5 ** 0.75, 1.0, 1.0]))
    assert torch.allclose(weighting(x, 100.0, 1.0), torch.tensor([0.0, 0.5, 1.0, 1.0]))   # α sets the curve
    assert torch.allclose(weighting(torch.tensor([5.0]), 10.0, 0.5), torch.tensor([0.5 ** 0.5]))
    f = weighting(torch.linspace(0, 300, 61), 100.0, 0.75)
    assert (f.diff() >= 0).all() and f.max() == 1.0                          # rises, then capped at 1


def test_glove_cooccurrence_counts_match_hand_counts():
    a, b, c = 5, 6, 7
    rows = torch.tensor([[a, b, c, a, PAD, PAD],
                         [c, b, PAD, PAD, PAD, PAD]])
    X = dense(*cooccurrence(rows, 8, window=3), 8)
    # row 1, "a b c a": d=1 (a,b) (b,c) (c,a); d=2 (a,c) (b,a); d=3 (a,a).  row 2, "c b": d=1 (c,b)
    hand = torch.zeros(8, 8)
    for i, j, add in [(a, b, 1), (b, c, 1), (c, a, 1), (a, c, 1 / 2), (b, a, 1 / 2), (a, a, 1 / 3), (c, b, 1)]:
        hand[i, j] += add
        hand[j, i] += add                                                    # symmetric window: both orders
    assert torch.allclose(X, hand)
    assert X[a, b] == 1.5 and X[b, c] == 2.0 and X[a, c] == 1.5 and abs(X[a, a] - 2 / 3) < 1e-6
    X2 = dense(*cooccurrence(rows, 8, window=2), 8)                          # a pair 3 apart is out of reach
    assert X2[a, a] == 0 and torch.allclose(X2, hand - torch.diag(hand.diag()))
    assert X[PAD].abs().sum() == 0 and X[:, PAD].abs().sum() == 0           # padding never counts


def test_glove_cooccurrence_is_symmetric_with_one_entry_per_pair():
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(5, 40, (50, 12), generator=g)
    lengths = torch.randint(1, 13, (50,), generator=g)
    rows = rows.masked_fill(torch.arange(12)[None] >= lengths[:, None], PAD)
    i, j, x = cooccurrence(rows, 40, window=4)
    assert len(set(zip(i.tolist(), j.tolist()))) == len(i) and (x > 0).all()   # distinct, non-zero entries
    X = dense(i, j, x, 40)
    assert torch.allclose(X, X.T)
    pairs = sum(2 * max(int(n) - d, 0) / d for n in lengths for d in range(1, 5))  # every pair d apart, both ways
    assert abs(X.sum().item() - pairs) < 1e-3


def test_glove_loss_is_equation_8():
    torch.manual_seed(0)
    model = glove.GloVe(glove.Config(vocab_size=6, dim=3, x_max=10.0, alpha=0.75))
    for p in model.parameters():
        nn.init.normal_(p)
    i, j, x = torch.tensor([5, 2, 3]), torch.tensor([1, 4, 3]), torch.tensor([0.5, 4.0, 30.0])
    w, wt = model.w.weight.detach(), model.w_tilde.weight.detach()
    b, bt = model.b.weight.detach()[:, 0], model.b_tilde.weight.detach()[:, 0]
    J = 0.0
    for i_, j_, x_ in zip(i.tolist(), j.tolist(), x.tolist()):
        f = (x_ / 10.0) ** 0.75 if x_ < 10.0 else 1.0
        J += f * (float(w[i_] @ wt[j_]) + float(b[i_]) + float(bt[j_]) - torch.tensor(x_).log().item()) ** 2
    assert abs(model.loss(i, j, x).item() - J / 3) < 1e-5                   # J over the batch, divided by its size
    assert torch.allclose(model(i, j), (w[i] * wt[j]).sum(-1) + b[i] + bt[j])


def test_glove_vectors_are_the_paper_sum_or_the_release_alternatives():
    model = glove.GloVe(glove.Config(vocab_size=6, dim=3, vectors="sum"))
    w, wt = model.w.weight, model.w_tilde.weight
    assert torch.equal(model.vectors(), w + wt)                              # the paper: W + W̃
    model.cfg.vectors = "concat"
    assert torch.equal(model.vectors(), torch.cat([w, wt], 1))               # the release's -model 0, no biases
    model.cfg.vectors = "word"
    assert torch.equal(model.vectors(), w)                                   # the release's -model 1


def test_glove_trains_on_the_counts_of_the_training_split(planted_data):
    model = deepatlas.create_model("glove", vocab_size=planted_data.dims["vocab_size"], dim=8)
    objective = deepatlas.catalog.get("glove").objective(model)
    entries = objective.prepare(planted_data)
    i, j, x = entries.tensors
    ref = cooccurrence(planted_data.train.tensors[0], model.cfg.vocab_size, model.cfg.context)
    assert all(torch.equal(a, r) for a, r in zip((i, j, x), ref))
    assert objective.counts.sum() == sum(planted_data.spec["counts"])      # the shared buffers are filled too
    vocab = planted_data.spec["vocab"]
    cat, kitten, the = vocab.index("cat"), vocab.index("kitten"), vocab.index("the")
    X = dict(zip(zip(i.tolist(), j.tolist()), x.tolist()))
    assert X[cat, kitten] == X[kitten, cat] > 0 and X[cat, the] > X[cat, kitten]
    loss, _ = objective.training_step(entries[:64])
    assert loss.item() > 0


@pytest.fixture(scope="module")
def glove_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "glove"
    return out, deepatlas.train("glove", out=out, overrides={"epochs": "8"})


def test_glove_learns_planted_semantics(glove_run):
    _, metrics = glove_run
    assert metrics["test"]["purity@5"] > 0.6                                # chance ≈ 0.04
    assert metrics["test"]["analogy"] > 0.5                                 # chance < 0.01


# ---- fastText --------------------------------------------------------------------------------------

def test_fasttext_ngrams_of_where():
    assert fasttext.char_ngrams("where", 3, 3) == ["<wh", "whe", "her", "ere", "re>"]   # the paper's example
    grams = fasttext.char_ngrams("where", 3, 6)
    assert len(grams) == 5 + 4 + 3 + 2 and "<where" in grams and "where>" in grams
    assert "<where>" not in grams                                           # 7 characters: longer than 6
    assert fasttext.char_ngrams("a", 3, 6) == ["<a>"]                       # a short word is its own n-gram
    assert all(g in grams for g in fasttext.char_ngrams("here", 3, 3)[1:])  # "her", "ere", "re>" shared


def test_fasttext_hash_is_fnv1a_as_in_the_release():
    assert fasttext.fnv1a("") == 0x811C9DC5                                 # the offset basis
    assert fasttext.fnv1a("a") == 0xE40C292C                                # published FNV-1a test vectors
    assert fasttext.fnv1a("foobar") == 0xBF9CF968
    h = 0x811C9DC5                                                          # "<wh" by hand
    for byte in (0x3C, 0x77, 0x68):
        h = ((h ^ byte) * 16777619) % 2 ** 32
    assert fasttext.fnv1a("<wh") == h == 1048167652
    # non-ASCII: the release reads bytes as signed chars, so 0xC3 0xA9 ("é") enter as 0xFFFFFFC3, 0xFFFFFFA9
    h = ((0x811C9DC5 ^ 0xFFFFFFC3) * 16777619) % 2 ** 32
    h = ((h ^ 0xFFFFFFA9) * 16777619) % 2 ** 32
    assert fasttext.fnv1a("é") == h


def small_fasttext(vocab: list[str], **cfg) -> fasttext.FastText:
    torch.manual_seed(0)
    model = deepatlas.create_model("fasttext", vocab_size=len(vocab), dim=4, buckets=97, **cfg)
    model.set_vocab(vocab)
    return model


def test_fasttext_word_vector_is_its_row_plus_its_ngram_rows():
    vocab = words.SPECIALS + ["where", "here", "a"]
    model = small_fasttext(vocab)
    z, V = model.z.weight, len(vocab)
    for idx, word in enumerate(vocab):
        rows = [idx] + ([V + fasttext.fnv1a(g) % 97 for g in fasttext.char_ngrams(word)]
                        if idx >= words.N_SPECIALS else [])                 # specials: their own row only
        assert sorted(model.subwords[idx][model.subwords[idx] != model.pad_row].tolist()) == sorted(rows)
        assert torch.allclose(model.vectors()[idx], z[rows].sum(0), atol=1e-6)
        if idx >= words.N_SPECIALS:
            assert torch.allclose(model.vector_of(word), model.vectors()[idx], atol=1e-6)
    unseen = "wheres"                                                       # out of the vocabulary: n-grams only
    rows = [V + fasttext.fnv1a(g) % 97 for g in fasttext.char_ngrams(unseen)]
    assert torch.allclose(model.vector_of(unseen), z[rows].sum(0), atol=1e-6)
    assert model(torch.tensor([5]), torch.tensor([[6, 7]])).shape == (1, 2)
    assert z[model.pad_row].abs().sum() == 0
    long = small_fasttext(words.SPECIALS + ["a" * 30], max_ngrams=10)       # long words keep their first slots
    assert (long.subwords[-1] != long.pad_row).sum() == 10


@pytest.fixture(scope="module")
def fasttext_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "fasttext"
    return out, deepatlas.train("fasttext", out=out, overrides={"epochs": "3"})


def test_fasttext_learns_planted_semantics(fasttext_run):
    _, metrics = fasttext_run
    assert metrics["test"]["purity@5"] > 0.6                                # chance ≈ 0.04
    assert metrics["test"]["analogy"] > 0.5                                 # chance < 0.01


# unseen variants, each sharing most of its n-grams with one category word of the planted corpus
UNSEEN = {"kittens": "young", "goslings": "young", "tractors": "vehicle", "motorbikes": "vehicle",
          "screwdrivers": "tool", "hammers": "tool", "cheeses": "food", "purplish": "colour"}


def unseen_hits(objective, spec) -> float:
    """The share of the 5 nearest words (among all) of each UNSEEN word's n-gram vector in its category."""
    vocab, category, names = spec["vocab"], spec["category"], spec["category_names"]
    assert not set(UNSEEN) & set(vocab)
    hits = 0
    for word, expected in UNSEEN.items():
        _, nearest = objective.nearest(objective.model.vector_of(word)[None], 5)   # (1, 5)
        hits += sum(category[i] >= 0 and names[category[i]] == expected for i in nearest[0].tolist())
    return hits / (5 * len(UNSEEN))


def test_fasttext_unseen_word_lands_nearest_its_category(fasttext_run, planted_data):
    run, _ = fasttext_run
    objective = deepatlas.load(run).objective                                         # the n-gram table came back too
    fresh = fasttext.FastText(objective.model.cfg)
    fresh.set_vocab(planted_data.spec["vocab"])
    assert torch.equal(objective.model.subwords, fresh.subwords)
    assert torch.equal(objective.model.word_hash, fresh.word_hash)
    assert unseen_hits(objective, planted_data.spec) >= 0.8
    # untrained, only spelling links "kittens" to "kitten", and nothing to the rest of the category
    untrained = deepatlas.catalog.get("fasttext").objective(fresh)
    untrained.prepare(planted_data)
    assert unseen_hits(untrained, planted_data.spec) < 0.5
    spec = planted_data.spec
    prediction = deepatlas.predict(run, "tractors")                         # predict --neighbours uses it too
    neighbours = [spec["category"][spec["vocab"].index(w)] for w, _ in prediction.details[0]["neighbours"][:5]]
    assert neighbours.count(spec["category_names"].index("vehicle")) >= 4
