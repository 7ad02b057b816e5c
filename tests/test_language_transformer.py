"""The "transformer": attention equal to torch's, the explicit attention equal to the fused kernel, causal and padding masks, sinusoidal positions, pre- and
post-norm, label smoothing, the warm-up schedule, greedy and beam decoding, and learning the dates."""
from deepatlas.tasks import get_task
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deepatlas
from deepatlas import catalog
from deepatlas import data as datasets
from deepatlas.catalog import Train, Data
from deepatlas.data import pairs
from deepatlas.engine.loop import lr_factor
from deepatlas.models.language.transformer import (
    SequenceConfig,
    SequenceEncoder,
    MultiHeadAttention,
    attention,
    attention_probs,
    attention_weights,
    causal_mask,
    padding_mask,
    sinusoidal_positions,
)
from deepatlas.tasks.translation import BOS, EOS, PAD, Translation

SMALL = {"src_vocab": 12, "tgt_vocab": 9, "d_model": 16, "heads": 4, "enc_layers": 2, "dec_layers": 2, "d_ff": 32}


def small_model(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return deepatlas.create_model("transformer", **{**SMALL, **overrides}).eval()


def random_ids(n: int, vocab: int, min_len: int, max_len: int, seed: int = 0) -> torch.Tensor:
    """(n, max_len) ids >= 4 with random lengths, right-padded with PAD."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=g)
    ids = torch.randint(4, vocab, (n, max_len), generator=g)
    return ids.masked_fill(torch.arange(max_len)[None] >= lengths[:, None], PAD)


def decoder_input(n: int, length: int, seed: int = 1) -> torch.Tensor:
    """BOS + random target tokens: (n, length)."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.full((n, 1), BOS), torch.randint(3, SMALL["tgt_vocab"], (n, length - 1), generator=g)], 1)


# ---- attention -----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["padding", "causal", "causal+padding", "cross"])
def test_multi_head_attention_equals_torch(case):
    torch.manual_seed(0)
    ours = MultiHeadAttention(16, 4).eval()
    ref = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():  # both stack W^Q, W^K, W^V in one (3C, C) matrix, in that order
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.copy_(ours.qkv.bias)
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x, memory = torch.randn(3, 7, 16), torch.randn(3, 5, 16)
    keep = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5], dtype=torch.bool)  # (B, T)
    keep_memory = keep[:, :5]
    if case == "padding":
        got = ours(x, mask=padding_mask(keep))
        want, _ = ref(x, x, x, key_padding_mask=~keep)            # torch's masks say True = may NOT attend
    elif case == "causal":
        got = ours(x, causal=True)
        want, _ = ref(x, x, x, attn_mask=~causal_mask(7))
    elif case == "causal+padding":
        got = ours(x, mask=padding_mask(keep), causal=True)
        want, _ = ref(x, x, x, attn_mask=~causal_mask(7), key_padding_mask=~keep)
    else:
        got = ours(x, memory, mask=padding_mask(keep_memory))
        want, want_weights = ref(x, memory, memory, key_padding_mask=~keep_memory)  # weights averaged over heads
        assert torch.allclose(attention_weights(ours, x, memory, padding_mask(keep_memory)), want_weights, atol=1e-6)
    assert got.shape == (3, 7, 16)
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("case", ["none", "causal", "padding", "causal+padding", "cross", "nowhere"])
def test_explicit_attention_equals_the_fused_kernel(case):
    """fused=False, softmax(Q K^T / sqrt(d_k) + M) V written out, and fused=True, torch's
    F.scaled_dot_product_attention: the same outputs and the same gradients for inputs and weights."""
    torch.manual_seed(0)
    fused = MultiHeadAttention(16, 4).eval()
    explicit = MultiHeadAttention(16, 4, fused=False).eval()
    explicit.load_state_dict(fused.state_dict())
    x, memory = torch.randn(3, 7, 16, requires_grad=True), torch.randn(3, 5, 16, requires_grad=True)
    keep = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5], dtype=torch.bool)  # (B, T)
    kwargs = {"none": {}, "causal": {"causal": True}, "padding": {"mask": padding_mask(keep)},
              "causal+padding": {"mask": padding_mask(keep), "causal": True},
              "cross": {"memory": memory, "mask": padding_mask(keep[:, :5])},
              # query 0 of sentence 2 may look nowhere (its only earlier key is padding): zero weights, no NaN
              "nowhere": {"mask": padding_mask(torch.cat([~keep[2:], keep[:2]])), "causal": True}}[case]
    inputs = [x, memory] if case == "cross" else [x]
    w = torch.randn(3, 7, 16)
    results = []
    for layer in (explicit, fused):
        y = layer(x, **kwargs)                                                # (B, T, C)
        results.append((y, torch.autograd.grad((y * w).sum(), inputs + list(layer.parameters()))))
    (y_explicit, g_explicit), (y_fused, g_fused) = results
    assert y_explicit.isfinite().all() and not torch.equal(y_explicit, torch.zeros_like(y_explicit))
    torch.testing.assert_close(y_explicit, y_fused, rtol=0, atol=1e-5)
    for a, b in zip(g_explicit, g_fused, strict=True):
        assert a.isfinite().all()
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    if case == "nowhere":
        assert (fused.weights(x, **kwargs)[0, :, 0] == 0).all()              # sentence 0's first query


def test_attention_is_the_softmax_of_scaled_scores_over_the_values():
    """Equation (1) for one head by hand: masked keys get weight 0, every row of weights sums to 1."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 8)  # (B, nh, T|S, hs)
    keep = torch.tensor([[1] * 6, [1] * 3 + [0] * 3], dtype=torch.bool)
    weights = attention_probs(q, k, padding_mask(keep))                       # (B, nh, T, S)
    assert weights.shape == (2, 3, 4, 6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 4))
    assert (weights[1, :, :, 3:] == 0).all()
    by_hand = torch.softmax(q[1, 2] @ k[1, 2, :3].T / math.sqrt(8), -1) @ v[1, 2, :3]  # (T, hs)
    torch.testing.assert_close(attention(q, k, v, padding_mask(keep))[1, 2], by_hand)
    torch.testing.assert_close(attention(q, k, v), F.scaled_dot_product_attention(q, k, v), rtol=0, atol=1e-6)


@pytest.mark.parametrize("norm_first", [False, True])
def test_explicit_transformer_equals_the_fused_one(norm_first):
    """The whole encoder-decoder (padding, causal and cross-attention) with fused=False and fused=True, same weights:
    the same logits and the same gradients of the training loss."""
    src, tgt = random_ids(6, 12, 1, 8), torch.cat([decoder_input(6, 6), torch.full((6, 1), EOS)], 1)
    grads = []
    for fused in (False, True):
        model = small_model(norm_first=norm_first, fused=fused)
        assert all(b.attn.fused == fused == b.cross_attn.fused for b in model.decoder)
        loss, _ = Translation(model).training_step((src, tgt))
        grads.append([model(src, tgt[:, :-1]), *torch.autograd.grad(loss, list(model.parameters()))])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_is_causal(norm_first):
    """Changing the target tokens after position t leaves the logits at positions <= t unchanged."""
    model = small_model(norm_first=norm_first)
    src, tgt_in = random_ids(4, 12, 3, 8), decoder_input(4, 7)
    logits = model(src, tgt_in)
    assert logits.shape == (4, 7, SMALL["tgt_vocab"])
    for t in range(6):
        changed = tgt_in.clone()
        changed[:, t + 1:] = torch.randint(3, SMALL["tgt_vocab"], (4, 6 - t))
        assert (changed != tgt_in).any()
        other = model(src, changed)
        assert torch.allclose(logits[:, :t + 1], other[:, :t + 1], atol=1e-6)
        assert not torch.allclose(logits[:, t + 1:], other[:, t + 1:], atol=1e-3)  # the future does see them


@pytest.mark.parametrize("norm_first", [False, True])
def test_source_padding_changes_nothing(norm_first):
    """Whatever sits at the source's padding positions (here: large noise in place of their embeddings) and
    however much padding follows, the encoder's real positions and every decoder output stay the same."""
    model = small_model(norm_first=norm_first)
    src, tgt_in = random_ids(6, 12, 1, 6), decoder_input(6, 5)
    real = (src != PAD)[..., None]
    memory, _ = model.encode(src)
    logits = model(src, tgt_in)

    def noisy_padding(module, inputs, output):
        return torch.where((inputs[0] == PAD)[..., None], 10 * torch.randn_like(output), output)

    hook = model.src_embed.register_forward_hook(noisy_padding)
    try:
        noisy_memory, _ = model.encode(src)
        assert not torch.allclose(memory, noisy_memory, atol=1e-2)  # the padding positions themselves did change
        assert torch.allclose(memory.masked_select(real), noisy_memory.masked_select(real), atol=1e-5)
        assert torch.allclose(logits, model(src, tgt_in), atol=1e-5)
        longer = torch.cat([src, torch.full((6, 4), PAD)], 1)
        assert torch.allclose(logits, model(longer, tgt_in), atol=1e-5)
    finally:
        hook.remove()
    tokens, weights = model.greedy(src, max_len=6)
    tokens2, weights2 = model.greedy(longer, max_len=6)
    assert torch.equal(tokens, tokens2) and torch.allclose(weights, weights2[..., :src.shape[1]], atol=1e-6)
    live = tokens != PAD
    assert torch.allclose(weights.sum(-1)[live], torch.ones(int(live.sum())), atol=1e-5)
    assert (weights.masked_select(~real.transpose(1, 2).expand_as(weights)) == 0).all()  # exactly none on padding
    assert (weights2[..., src.shape[1]:] == 0).all() and (weights[~live] == 0).all()


# ---- positions, norms, weight sharing, label smoothing, schedule ---------------------------------

def test_sinusoidal_positions_follow_the_formula():
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...); with d = 8 the divisors are 1, 10, 100, 1000."""
    pe = sinusoidal_positions(1001, 8)
    assert pe.shape == (1001, 8)
    expected = {(0, 0): 0.0, (0, 1): 1.0, (0, 7): 1.0, (1, 0): math.sin(1), (1, 1): math.cos(1),
                (3, 2): math.sin(0.3), (5, 3): math.cos(0.5), (50, 4): math.sin(0.5), (50, 5): math.cos(0.5),
                (1000, 6): math.sin(1.0), (1000, 7): math.cos(1.0), (7, 0): math.sin(7)}
    for (pos, i), value in expected.items():
        assert pe[pos, i].item() == pytest.approx(value, abs=1e-5), (pos, i)
    # the model adds them to sqrt(d_model)-scaled embeddings
    model = small_model()
    ids = random_ids(2, 12, 5, 5)
    want = model.src_embed(ids) * math.sqrt(16) + sinusoidal_positions(5, 16)
    assert torch.allclose(model.embed(model.src_embed, ids), want, atol=1e-6)
    long_ids = torch.full((1, 300), 5)  # past the precomputed table: computed on the fly
    want = model.src_embed(long_ids) * 4 + sinusoidal_positions(300, 16)
    assert torch.allclose(model.embed(model.src_embed, long_ids), want, atol=1e-5)


def test_post_norm_and_pre_norm_both_build_run_and_learn():
    src, tgt = random_ids(8, 12, 3, 7), torch.cat([decoder_input(8, 6), torch.full((8, 1), EOS)], 1)
    outputs = {}
    for norm_first in (False, True):
        model = small_model(norm_first=norm_first).train()
        assert all(b.norm_first == norm_first for b in [*model.encoder, *model.decoder])
        # pre-norm leaves the residual stream unnormalized, so it ends in a LayerNorm; post-norm already does
        assert isinstance(model.enc_norm, nn.LayerNorm) == norm_first == isinstance(model.dec_norm, nn.LayerNorm)
        memory, _ = model.encode(src)                      # either way the encoder's output is layer-normed
        assert torch.allclose(memory.mean(-1), torch.zeros(8, 7), atol=1e-5)
        objective = Translation(model)
        first = objective.training_step((src, tgt))[0]
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(30):
            loss, _ = objective.training_step((src, tgt))
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < 0.5 * first.item()
        outputs[norm_first] = small_model(norm_first=norm_first)(src, tgt[:, :-1])
    assert not torch.allclose(outputs[False], outputs[True], atol=1e-3)  # same weights, another function


def test_decoder_embedding_and_output_projection_are_shared():
    model = small_model()
    assert model.out.weight is model.tgt_embed.weight
    assert small_model(tie_embeddings=False).out.weight is not small_model(tie_embeddings=False).tgt_embed.weight
    n_tied = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in small_model(tie_embeddings=False).parameters()) == n_tied + 9 * 16


def test_label_smoothing_is_the_models_and_follows_its_definition():
    """loss = (1 - ε) CE(true token) + ε · mean over the vocabulary of -log p; validation reports plain CE."""
    model = small_model(label_smoothing=0.2)
    objective = catalog.get("transformer").objective(model)
    assert objective.label_smoothing == 0.2
    src, tgt = random_ids(5, 12, 3, 7), torch.cat([decoder_input(5, 6), torch.full((5, 1), EOS)], 1)
    logp = model(src, tgt[:, :-1]).log_softmax(-1)                        # (B, T, V)
    nll = -logp.gather(-1, tgt[:, 1:, None])[..., 0]
    want = (0.8 * nll + 0.2 * -logp.mean(-1)).mean()
    assert objective.training_step((src, tgt))[0].item() == pytest.approx(want.item(), abs=1e-5)
    assert objective.validation_step((src, tgt))["loss"].item() == pytest.approx(nll.mean().item(), abs=1e-5)


def test_warm_up_then_inverse_square_root_schedule():
    """lr rises linearly to recipe.lr at `warmup` steps, then falls as 1/sqrt(step): the paper's (3) up to a constant."""
    recipe = Train(lr=1e-3, schedule="inverse_sqrt", warmup=100)
    assert lr_factor(recipe, 0, 10_000) == pytest.approx(0.01)
    assert lr_factor(recipe, 49, 10_000) == pytest.approx(0.5)
    assert lr_factor(recipe, 99, 10_000) == pytest.approx(1.0)       # the peak, at the end of the warm-up
    assert lr_factor(recipe, 399, 10_000) == pytest.approx(0.5)      # 4x the steps, half the rate
    assert lr_factor(recipe, 9_999, 10_000) == pytest.approx(0.1)
    d_model, warmup = 64, 100
    for step in range(1, 3000, 37):  # lrate = d^-0.5 min(step^-0.5, step warmup^-1.5) at 1-based step
        paper = d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5)
        assert lr_factor(recipe, step - 1, 10_000) * (d_model * warmup) ** -0.5 == pytest.approx(paper)
    entry = catalog.get("transformer")
    assert entry.train.schedule == "inverse_sqrt" and entry.train.warmup > 0


# ---- decoding ------------------------------------------------------------------------------------

def sequence_log_prob(model, src: torch.Tensor, outputs: list[list[int]]) -> torch.Tensor:
    """log p(output | src) under teacher forcing, PAD and BOS excluded as the decoders do: (N,)."""
    width = max(map(len, outputs))
    tgt_out = torch.tensor([o + [PAD] * (width - len(o)) for o in outputs])          # (N, T)
    tgt_in = torch.cat([torch.full((len(outputs), 1), BOS), tgt_out[:, :-1]], 1)
    logp = model.log_probs(model(src.expand(len(outputs), -1), tgt_in))              # (N, T, V)
    return logp.gather(-1, tgt_out[..., None])[..., 0].masked_fill(tgt_out == PAD, 0.0).sum(1)


@pytest.mark.parametrize("seed", range(4))
def test_beam_width_one_is_greedy_and_wider_beams_are_no_worse(seed):
    model = small_model(seed, length_penalty=0.0, norm_first=bool(seed % 2))
    src = random_ids(10, 12, 2, 7, seed=seed)
    tokens, weights = model.greedy(src, max_len=8)
    beam_tokens, beam_weights = model.beam_search(src, max_len=8, width=1)
    assert torch.equal(tokens, beam_tokens) and torch.allclose(weights, beam_weights)
    assert torch.equal(model.decode(src, 8, beam=1)[0], tokens)
    assert ((tokens == EOS).sum(1) <= 1).all()
    for width in (2, 4):
        best, _ = model.decode(src, 8, beam=width)
        for i in range(len(src)):
            row = src[i:i + 1, :int((src[i] != PAD).sum())]
            outs = [[t for t in out.tolist() if t != PAD] for out in (tokens[i], best[i])]
            greedy_lp, beam_lp = sequence_log_prob(model, row, outs)
            assert beam_lp >= greedy_lp - 1e-5


@pytest.mark.parametrize("norm_first", [False, True])
def test_widest_beam_is_exhaustive_search(norm_first):
    """A beam as wide as the whole tree of outputs must return the most probable output, as scored
    independently by the teacher-forced forward pass, and carry each hypothesis's true log p and length."""
    model = small_model(norm_first=norm_first, tgt_vocab=6, length_penalty=0.0)  # 4 specials + 2 characters
    with torch.no_grad():
        model.out.bias[EOS] = -3.0                          # let long outputs compete with stopping early
    chars, max_len = [3, 4, 5], 4                           # UNK and two characters
    outputs = [list(p) + [EOS] for n in range(max_len) for p in itertools.product(chars, repeat=n)]
    outputs += [list(p) for p in itertools.product(chars, repeat=max_len)]  # cut at max_len, no EOS
    assert len(outputs) == 121
    for row in random_ids(3, 12, 2, 6, seed=1):
        src = row[None, :int((row != PAD).sum())]
        scores = sequence_log_prob(model, src, outputs)
        tokens, _ = model.beam_search(src, max_len=max_len, width=len(outputs))
        found = [t for t in tokens[0].tolist() if t != PAD]
        assert found == outputs[int(scores.argmax())]
        hyps, log_p, lengths = model.hypotheses(src, max_len=max_len, width=len(outputs))
        kept = [[t for t in h if t != PAD] for h in hyps[0].tolist()]
        assert sorted(map(tuple, kept)) == sorted(map(tuple, outputs))  # all of them, each once
        assert torch.allclose(log_p[0], scores[[outputs.index(h) for h in kept]], atol=1e-4)
        assert lengths[0].tolist() == [float(len(h)) for h in kept]


def test_length_penalty_and_batching():
    """Each sentence decodes the same alone as in a batch; α > 0 favours longer finished hypotheses."""
    model = small_model(1)
    src = random_ids(6, 12, 2, 6, seed=3)
    batch, _ = model.beam_search(src, 7, width=3)
    for i in range(len(src)):
        alone, _ = model.beam_search(src[i:i + 1], 7, width=3)
        assert torch.equal(alone[0], batch[i, :alone.shape[1]]) and (batch[i, alone.shape[1]:] == PAD).all()
    tokens, log_p, lengths = model.hypotheses(src, 7, width=3)
    for alpha in (0.0, 1.0):
        model.cfg.length_penalty = alpha
        best, _ = model.beam_search(src, 7, width=3)
        want = (log_p / ((5 + lengths) / 6) ** alpha).argmax(-1)
        assert torch.equal(best, tokens[torch.arange(6), want])


# ---- learning ------------------------------------------------------------------------------------

def test_transformer_learns_dates():
    """400 steps of a one-layer model on dates. A model that ignores its input can at best guess each position's
    most common character (the dashes, the EOS, the century...), and almost never a whole date."""
    data = get_task("translation").load(Data(data="dates"))
    torch.manual_seed(0)
    model = deepatlas.create_model("transformer", **data.dims, d_model=32, d_ff=64, enc_layers=1, dec_layers=1,
                                   beam=2)
    objective = catalog.get("transformer").objective(model)
    src, tgt = data.train.tensors
    recipe = Train(lr=5e-3, schedule="inverse_sqrt", warmup=50)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    for step in range(400):
        for group in opt.param_groups:
            group["lr"] = recipe.lr * lr_factor(recipe, step, 400)
        i = step * 64 % (len(src) - 64)
        loss, _ = objective.training_step((src[i:i + 64], tgt[i:i + 64]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    val_src, val_tgt = (t[:300] for t in data.val.tensors)
    logs = objective.eval().validation_step((val_src, val_tgt))
    majority = torch.stack([F.one_hot(tgt[:, t], data.dims["tgt_vocab"]).sum(0).argmax() for t in range(1, 12)])
    baseline = (val_tgt[:, 1:] == majority).float().mean()    # ≈ 0.5
    assert logs["token_accuracy"] > baseline + 0.25, (logs, baseline)
    assert logs["exact_match"] > 0.15, logs
    out = pairs.predict(objective, data.spec, "Saturday, Nov 21, 2026")[0]
    assert isinstance(out["predicted"], str) and out["attention"]["source"] == list("Saturday, Nov 21, 2026")
    assert all(abs(sum(r) - 1) < 1e-4 for r in out["attention"]["weights"])


# ---- the encoder alone on the sequence tasks (the entry's sequence form) ---------------------------------------

def test_sequence_encoder_masks_the_future_only_when_causal():
    """The encoder reads a series whole: step t's output moves when a later step changes. With `causal` (the
    decoder's mask) it never does, and the earlier steps' outputs are exactly unchanged."""
    torch.manual_seed(0)
    x = torch.randn(2, 12, 3)
    later = x.clone()
    later[:, 8:] += 1.0
    for causal in (False, True):
        model = SequenceEncoder(SequenceConfig(in_features=3, n_outputs=4, per_step=True, causal=causal)).eval()
        moved = (model(x) - model(later)).abs().amax(-1)           # (B, T): how much each step's output moved
        assert moved[:, 8:].min() > 1e-3
        if causal:
            assert moved[:, :8].max() < 1e-6
        else:
            assert moved[:, :8].min() > 1e-4


def test_transformer_runs_on_the_sequence_tasks_through_its_form(tmp_path):
    """The card names the form's task without importing the module; an embedded sequence set picks the form, which
    `compare` trains beside an RNN (one task for both), learns the adding problem far below the mean predictor, and
    is loaded back as the form from its run's config.json."""
    from deepatlas import api
    from deepatlas.tools.compare import compare
    assert catalog.card("transformer").also == ["sequence"] == api.get("transformer").also
    assert api.form_for(api.get("transformer"), "adding-50").build is SequenceEncoder
    assert api.form_for(api.get("transformer"), "dates").build is not SequenceEncoder
    rows = compare(["transformer:epochs=1", "rnn:epochs=1"], data="adding-50", out=tmp_path)
    mse = {r["name"].split(":")[0]: r["test_mse"] for r in rows}
    baseline = api.baseline(rows[0]["run_dir"])["mse"]
    assert mse["transformer"] < 0.1 * baseline, (mse, baseline)
    predictor = api.load(rows[0]["run_dir"])
    assert predictor.task.name == "sequence" and isinstance(predictor.objective.model, SequenceEncoder)
