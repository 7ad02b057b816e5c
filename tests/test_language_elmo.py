"""ELMo ("elmo"): a causal forward LM and an anti-causal backward LM, the character CNN (same spelling,
same vector; long words cut), the scalar mix of layers, the spelling table built from the data's
vocabulary, the frozen biLM under a downstream head, and learning a corpus a bigram model cannot."""
import math
from types import SimpleNamespace

import pytest
import torch

import deepatlas
from deepatlas.engine.checkpoint import load_weights, save_weights
from deepatlas.errors import DeepAtlasError
from deepatlas.models.language import elmo
from deepatlas.models.language.elmo import BiLM, ELMoClassifier, ScalarMix, spell

SMALL = {"vocab_size": 12, "max_chars": 8, "char_dim": 8, "widths": (1, 2, 3), "filters": (8, 8, 8), "dim": 16,
         "dropout": 0.0}
WORDS = ["<pad>", "<unk>", "<mask>", "<cls>", "<sep>", "the", "cat", "sat", "on", "mat", "café", "extraordinarily"]


def small_model(**overrides):
    torch.manual_seed(0)
    model = deepatlas.create_model("elmo", **{**SMALL, **overrides}).eval()
    model.set_vocab(WORDS[:model.cfg.vocab_size])
    return model


def test_shapes():
    model = small_model()
    words = torch.randint(0, 12, (3, 7))
    logits_f, logits_b = model(words)
    assert logits_f.shape == logits_b.shape == (3, 7, 12)
    assert model.layers(words).shape == (3, 3, 7, 32)                # (L+1, B, T, 2H)
    assert model.embed(words, ScalarMix()).shape == (3, 7, 32)
    assert ELMoClassifier(model, 4)(words).shape == (3, 4)
    assert model.generate(words[:, :2], 5).shape == (3, 7)


def test_forward_lm_is_causal_and_backward_lm_anticausal():
    model = small_model()
    words = torch.randint(0, 12, (4, 10))
    t = 5
    later, earlier = words.clone(), words.clone()
    later[:, t + 1:] = torch.randint(0, 12, (4, 10 - t - 1))        # change x_{t+1..}
    earlier[:, :t] = torch.randint(0, 12, (4, t))                    # change x_{<t}
    f, b = model(words)
    f_later, b_later = model(later)
    f_earlier, b_earlier = model(earlier)
    assert torch.allclose(f[:, :t + 1], f_later[:, :t + 1], atol=1e-6)          # forward at <= t: unchanged
    assert not torch.allclose(f[:, t + 1:], f_later[:, t + 1:], atol=1e-3)       # ... and it does read them
    assert torch.allclose(b[:, t:], b_earlier[:, t:], atol=1e-6)                 # backward at >= t: unchanged
    assert not torch.allclose(b[:, :t], b_earlier[:, :t], atol=1e-3)
    assert not torch.allclose(f[:, t:], f_earlier[:, t:], atol=1e-3)            # forward reads the past
    assert not torch.allclose(b[:, :t + 1], b_later[:, :t + 1], atol=1e-3)       # backward reads the future


def test_encoder_and_softmax_are_shared_the_lstms_separate():
    model = small_model()
    words = torch.randint(0, 12, (2, 6))
    for direction in (0, 1):  # the loss of one direction alone
        model.zero_grad()
        model(words)[direction].square().mean().backward()
        grads = {name: p.grad is not None and p.grad.abs().sum() > 0 for name, p in model.named_parameters()}
        own, other = ("fwd", "bwd") if direction == 0 else ("bwd", "fwd")
        assert all(g for n, g in grads.items() if n.startswith(("chars.", "softmax.", own + ".")))
        assert not any(g for n, g in grads.items() if n.startswith(other + "."))


def test_second_lstm_layer_is_residual():
    model = small_model()
    x = torch.randn(2, 6, 16)
    (h1, h2), _ = model.fwd(x)
    lstm2_alone, _ = model.fwd.lstms[1](h1)
    assert torch.allclose(h2, lstm2_alone + h1, atol=1e-6)           # h_2 = LSTM_2(h_1) + h_1
    assert torch.allclose(h1, model.fwd.lstms[0](x)[0], atol=1e-6)


def test_char_cnn_depends_on_the_spelling_only():
    model = small_model()
    with torch.no_grad():
        model.spelling[11] = model.spelling[6]                        # a second word id spelled "cat"
    vectors = model.tokens(torch.tensor([[6, 11, 7, 5, 9]]))[0]       # (T, H)
    assert torch.allclose(vectors[0], vectors[1], atol=1e-6)          # same spelling, same vector
    d = torch.cdist(vectors[[0, 2, 3, 4]], vectors[[0, 2, 3, 4]])
    assert (d + torch.eye(4) * 1e3).min() > 1e-3                      # cat, sat, the, mat all differ


def test_long_words_are_cut_to_max_chars():
    table = spell(["a" * 40, "a" * 6, "café"], 8)
    assert table[0].tolist() == [elmo.BOW] + [ord("a") + 3] * 6 + [elmo.EOW]    # markers kept, bytes cut to 6
    assert torch.equal(table[0], table[1])
    assert table[2].tolist() == [elmo.BOW, *(b + 3 for b in "café".encode()), elmo.EOW, 0]  # é is two UTF-8 bytes
    model = small_model()
    model.set_vocab(WORDS[:10] + ["z" * 30 + "x", "z" * 30 + "y"])    # differ only past the cut
    vectors = model.tokens(torch.tensor([[10, 11]]))[0]
    assert torch.isfinite(vectors).all() and torch.allclose(vectors[0], vectors[1])


def test_scalar_mix_is_a_softmax_weighted_sum():
    mix = ScalarMix(3)
    with torch.no_grad():
        mix.w.copy_(torch.tensor([0.3, -1.2, 2.0]))
        mix.gamma.fill_(1.7)
    s = mix.weights()
    assert torch.isclose(s.sum(), torch.tensor(1.0)) and (s > 0).all()
    e = torch.exp(torch.tensor([0.3, -1.2, 2.0]))
    assert torch.allclose(s, e / e.sum())
    layers = torch.randn(3, 2, 5, 6)
    by_hand = 1.7 * (s[0] * layers[0] + s[1] * layers[1] + s[2] * layers[2])
    assert torch.allclose(mix(layers), by_hand, atol=1e-6)
    # the biLM's layers: 0 is the token vector twice, j >= 1 the forward and backward states side by side
    model = small_model()
    words = torch.randint(0, 12, (2, 5))
    x, fwd, bwd = model.directions(words)
    layers = model.layers(words)
    assert torch.allclose(layers[0], torch.cat([x, x], -1))
    assert torch.allclose(layers[2], torch.cat([fwd[1], bwd[1]], -1))
    assert torch.allclose(model.embed(words, mix), 1.7 * torch.einsum("j,jbtc->btc", s, layers), atol=1e-5)


def test_prepare_spells_the_vocabulary_into_a_saved_buffer(tmp_path):
    torch.manual_seed(0)
    model = deepatlas.create_model("elmo", **SMALL)
    assert int(model.spelling.abs().sum()) == 0                       # zeros until the data's vocabulary
    objective = BiLM(model)
    objective.prepare(SimpleNamespace(spec={"vocab": WORDS}))
    assert model.spelling[6].tolist() == [elmo.BOW, ord("c") + 3, ord("a") + 3, ord("t") + 3, elmo.EOW, 0, 0, 0]
    assert model.spelling[10].tolist() == [elmo.BOW, 99 + 3, 97 + 3, 102 + 3, 0xC3 + 3, 0xA9 + 3, elmo.EOW, 0]  # café
    assert model.spelling[11, -1].item() == elmo.EOW                       # "extraordinarily" cut to 6 bytes
    save_weights(objective, tmp_path / "w.safetensors")
    fresh = BiLM(deepatlas.create_model("elmo", **SMALL))
    load_weights(fresh, tmp_path / "w.safetensors")
    assert torch.equal(fresh.model.spelling, model.spelling)
    with pytest.raises(DeepAtlasError):
        objective.prepare(SimpleNamespace(spec={"vocab": WORDS[:5]}))  # a vocabulary of another size


def test_downstream_head_learns_the_mix_with_the_bilm_frozen():
    model = small_model()
    head = ELMoClassifier(model, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    words = torch.randint(5, 12, (16, 6))
    labels = (words == 6).any(1).long()                               # does the sentence mention "cat"?
    opt = torch.optim.Adam([p for p in head.parameters() if p.requires_grad], lr=0.1)
    for _ in range(100):
        loss = torch.nn.functional.cross_entropy(head(words), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the biLM did not move
    assert not torch.allclose(head.mix.w, torch.zeros(3))                         # the task chose its mix
    assert (head(words).argmax(1) == labels).float().mean() > 0.9


def test_objective_scores_both_directions_against_the_bigram():
    model = small_model()
    objective = BiLM(model).eval()
    x = torch.randint(5, 12, (3, 7))
    y = torch.cat([x[:, 1:], torch.randint(5, 12, (3, 1))], 1)
    baseline = torch.rand(3, 7) + 2
    logs = objective.validation_step((x, y, baseline))
    f, b = model(x)
    ce_f = torch.nn.functional.cross_entropy(f.flatten(0, 1), y.flatten())           # predicts x_{t+1}
    ce_b = torch.nn.functional.cross_entropy(b[:, 1:].flatten(0, 1), x[:, :-1].flatten())  # predicts x_{t-1}
    assert torch.isclose(logs["forward_cross_entropy"], ce_f) and torch.isclose(logs["backward_cross_entropy"], ce_b)
    assert torch.isclose(logs["loss"], (ce_f + ce_b) / 2)
    assert torch.isclose(logs["cross_entropy"], (21 * ce_f + 18 * ce_b) / 39)
    assert logs["cross_entropy#n"] == 39 and logs["bigram_cross_entropy#n"] == 21
    means = objective.summarize({"cross_entropy": 4.0, "bigram_cross_entropy": 4.5})
    assert math.isclose(means["perplexity_vs_bigram"], math.exp(-0.5)) and math.isclose(means["perplexity"], math.exp(4))


def planted_windows(n: int, T: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LM windows of a stream of sentences "the A eats F ." with food F fixed by animal A (6 of each).
    A bigram model must guess F from "eats" (and A from "eats", reading backwards): ln 6 per sentence each
    way, 2 ln 6 / 5 = 0.72 nats a token, where a model that remembers two words back needs ln 6 / 5 = 0.36."""
    g = torch.Generator().manual_seed(seed)
    animal = torch.randint(0, 6, (n * (T // 5 + 2),), generator=g)
    the, eats, stop = 5, 6, 7
    sentences = torch.stack([torch.full_like(animal, the), 8 + animal, torch.full_like(animal, eats),
                             14 + animal, torch.full_like(animal, stop)], 1).view(n, -1)  # (n, 5 * k)
    offset = torch.randint(0, 5, (n, 1), generator=g)
    stream = sentences.gather(1, offset + torch.arange(T + 1))        # (n, T + 1) windows at any phase
    return stream[:, :-1], stream[:, 1:], torch.zeros(n, T)


def test_learns_what_a_bigram_model_cannot():
    torch.manual_seed(0)
    model = deepatlas.create_model("elmo", vocab_size=20, max_chars=8, char_dim=8, widths=(1, 2, 3),
                                   filters=(16, 16, 16), dim=32, dropout=0.0)
    words = ["<pad>", "<unk>", "<mask>", "<cls>", "<sep>", "the", "eats", "."]
    words += ["cow", "dog", "pig", "hen", "owl", "bee", "hay", "bone", "corn", "seed", "mice", "honey"]
    objective = BiLM(model)
    objective.prepare(SimpleNamespace(spec={"vocab": words}))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(120):
        batch = planted_windows(32, 20, seed=step)
        loss, _ = objective.training_step(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    logs = objective.eval().validation_step(planted_windows(256, 20, seed=10_000))
    bigram = 2 * math.log(6) / 5                                      # 0.72 nats, the best a bigram can do
    assert logs["forward_cross_entropy"] < 0.65 * bigram              # the optimum is half of it
    assert logs["backward_cross_entropy"] < 0.65 * bigram
