"""BERT: the 80/10/10 masking statistics, bidirectional attention (the opposite of GPT's causal mask),
padding that changes nothing, segment embeddings that matter, [CLS]/[SEP] inputs, and learning both
the masked-LM and, after pre-training, a sentence classification."""
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import TensorDataset

import deepatlas
from deepatlas.data.text import CLS, MASK, PAD, SEP
from deepatlas.models.language.bert import N_SPECIAL, BertObjective, mask_tokens, pair, single


def small_bert(**overrides):
    torch.manual_seed(0)
    cfg = {"vocab_size": 30, "block_size": 16, "dim": 32, "layers": 2, "heads": 4, "n_classes": 3, "dropout": 0.0}
    return deepatlas.create_model("bert", **{**cfg, **overrides}).eval()


def test_masking_follows_the_80_10_10_rule():
    V = 1000
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, V, (400, 512), generator=g)       # specials (ids < 5) included, ~0.5%
    tokens[:, 0], tokens[:, 100], tokens[:, -50:] = CLS, SEP, PAD
    out, selected = mask_tokens(tokens, V, 0.15, generator=g)
    candidates = tokens >= N_SPECIAL
    assert not selected[~candidates].any()                     # never PAD, [CLS], [SEP], [MASK], UNK
    assert selected.float().sum() / candidates.sum() == pytest.approx(0.15, abs=0.003)
    assert torch.equal(out[~selected], tokens[~selected])      # unselected positions are untouched
    n = selected.sum()
    masked = (out == MASK) & selected
    replaced = (out != tokens) & (out != MASK) & selected
    kept = (out == tokens) & selected
    assert masked.sum() / n == pytest.approx(0.8, abs=0.01)
    assert replaced.sum() / n == pytest.approx(0.1, abs=0.01)   # (a random id equal to the original: 0.1%)
    assert kept.sum() / n == pytest.approx(0.1, abs=0.01)
    assert (out[replaced] >= N_SPECIAL).all()                  # random tokens are real tokens


def test_inputs_have_cls_sep_and_segments():
    x = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])
    tokens, segments = pair(x)
    assert tokens[0].tolist() == [CLS, 5, 6, 7, SEP, 8, 9, 10, SEP]
    assert segments[0].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    sentences = torch.tensor([[5, 6, 0, 0, 0], [7, 8, 9, 0, 0]])
    tokens, segments = single(sentences)                       # trimmed to the longest sentence
    assert tokens.tolist() == [[CLS, 5, 6, SEP, PAD], [CLS, 7, 8, 9, SEP]]
    assert not segments.any()


def test_bidirectional_a_later_token_changes_an_earlier_output():
    model = small_bert()
    tokens, segments = pair(torch.randint(N_SPECIAL, 30, (4, 16)))
    changed = tokens.clone()
    changed[:, -3] = (changed[:, -3] - N_SPECIAL + 1) % (30 - N_SPECIAL) + N_SPECIAL  # another real token
    a, b = model.encode(tokens, segments), model.encode(changed, segments)
    assert (a[:, :3] - b[:, :3]).abs().amax(-1).min() > 1e-4  # every row's first positions see the change


def test_padding_content_does_not_change_real_outputs():
    model = small_bert()
    sentences = torch.randint(N_SPECIAL, 30, (6, 12))
    lengths = torch.tensor([12, 3, 5, 7, 9, 1])
    sentences = sentences.masked_fill(torch.arange(12)[None] >= lengths[:, None], PAD)
    tokens, segments = single(sentences)
    keep = tokens != PAD
    noisy = torch.where(keep, tokens, torch.randint(N_SPECIAL, 30, tokens.shape))  # garbage under the padding
    a, b = model.encode(tokens, segments, keep), model.encode(noisy, segments, keep)
    assert (a - b)[keep].abs().max() < 1e-5
    wider = torch.cat([sentences, torch.full((6, 9), PAD)], 1)  # more padding: same scores
    assert (model(sentences) - model(wider)).abs().max() < 1e-5


def test_segment_embeddings_change_the_output():
    model = small_bert()
    tokens, segments = pair(torch.randint(N_SPECIAL, 30, (4, 16)))
    a = model.encode(tokens, segments)
    b = model.encode(tokens, 1 - segments)
    assert (a - b).abs().amax(-1).min() > 1e-3                 # every position


def test_next_sentence_pairs_and_baseline_ratio():
    model = small_bert(block_size=8)
    objective = BertObjective(model)
    train = TensorDataset(torch.tensor([[5, 7, 7, 7, 6, 6, 9, 0]]).repeat(10, 1))
    objective.prepare(SimpleNamespace(train=train))
    assert int(objective.frequent) == 7                        # the most frequent real token, not PAD
    objective.eval()
    x = torch.randint(N_SPECIAL, 30, (64, 8))
    logs = objective.validation_step((x, x, torch.zeros(64, 8)))
    assert {"masked_accuracy", "baseline_accuracy", "next_sentence_accuracy"} <= set(logs)
    assert logs["masked_accuracy#n"] > 0
    again = objective.validation_step((x, x, torch.zeros(64, 8)))
    assert torch.equal(logs["loss"], again["loss"])            # evaluation masks the same way every time
    means = objective.summarize({"masked_accuracy": 0.5, "baseline_accuracy": 0.2})
    assert means["masked_vs_baseline"] == pytest.approx(2.5)


def train_steps(objective, batches, steps: int, lr: float = 3e-3) -> None:
    opt = torch.optim.AdamW(objective.parameters(), lr=lr)
    objective.train()
    for _ in range(steps):
        loss, _ = objective.training_step(batches())
        opt.zero_grad()
        loss.backward()
        opt.step()
    objective.eval()


def test_learns_the_masked_lm():
    """Each row repeats a random 4-token pattern: a masked token is the one 4 steps before or after it.
    Chance is 1/25, and so is the most frequent token's share; a model that learns nothing stays there."""
    objective = BertObjective(small_bert(next_sentence=False, init_std=0.1))  # ~0.5/sqrt(dim) for width 32
    g = torch.Generator().manual_seed(0)

    def batches():
        x = torch.randint(N_SPECIAL, 30, (32, 4), generator=g).repeat(1, 4)  # (32, 16)
        return x, x, torch.zeros_like(x, dtype=torch.float)

    train_steps(objective, batches, 300)
    logs = objective.validation_step(batches())
    assert logs["masked_accuracy"] > 0.8 and logs["baseline_accuracy"] < 0.2


def test_pretrains_then_fine_tunes_a_classifier():
    """Class = a topic: about 60% of a sentence's tokens come from its class's 9 words, the rest from all 27
    (chance 1/3). The first `pretrain_steps` steps are masked-LM on the sentences, the rest classification."""
    objective = BertObjective(small_bert(vocab_size=32, block_size=12, n_classes=3, pretrain_steps=50, init_std=0.1))
    g = torch.Generator().manual_seed(0)

    def batches(n: int = 32):
        label = torch.randint(0, 3, (n,), generator=g)
        topical = N_SPECIAL + 9 * label[:, None] + torch.randint(0, 9, (n, 12), generator=g)  # (n, 12)
        x = torch.where(torch.rand(n, 12, generator=g) < 0.6, topical, torch.randint(N_SPECIAL, 32, (n, 12), generator=g))
        lengths = torch.randint(6, 13, (n,), generator=g)
        return x.masked_fill(torch.arange(12)[None] >= lengths[:, None], PAD), label

    objective.train()
    _, logs = objective.training_step(batches())
    assert "masked_accuracy" in logs                           # pre-training first
    train_steps(objective, batches, 299, lr=1e-3)
    assert int(objective.steps) == 300
    _, logs = objective.train().training_step(batches())
    assert "accuracy" in logs and "masked_accuracy" not in logs  # then fine-tuning
    objective.eval()
    x, label = batches(512)
    assert (objective.predict(x).argmax(-1) == label).float().mean() > 0.85
