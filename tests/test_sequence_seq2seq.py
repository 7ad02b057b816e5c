"""Seq2seq: beam search against greedy and against exhaustive search, attention that ignores
padding, the dates generator, the TSV reader, and learning to reverse strings."""
from deepatlas.tasks import get_task
import datetime
import itertools
import json
import random
from pathlib import Path

import pytest
import torch
from conftest import fit_steps

import deepatlas
from deepatlas import cli, data as datasets
from deepatlas.catalog import Data
from deepatlas.data import pairs
from deepatlas.api import load
from deepatlas.errors import DeepAtlasError
from deepatlas.tasks.translation import BOS, EOS, PAD, Translation, exact_match

CELLS_AND_ATTENTION = [(cell, att) for cell in ("gru", "lstm") for att in (True, False)]


def small_model(**overrides):
    torch.manual_seed(0)
    cfg = {"src_vocab": 12, "tgt_vocab": 9, "embed": 8, "hidden": 16, "attention_size": 8, "readout": 8}
    return deepatlas.create_model("seq2seq", **{**cfg, **overrides}).eval()


def random_sources(n: int, vocab: int, min_len: int, max_len: int, seed: int = 0) -> torch.Tensor:
    """(n, max_len) ids >= 4 with random lengths, right-padded with PAD."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (n,), generator=g)
    src = torch.randint(4, vocab, (n, max_len), generator=g)
    return src.masked_fill(torch.arange(max_len)[None] >= lengths[:, None], PAD)


# ---- decoding -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cell,attention", CELLS_AND_ATTENTION)
def test_beam_width_one_is_greedy(cell, attention):
    model = small_model(cell=cell, attention=attention)
    src = random_sources(16, 12, 2, 7)
    tokens, weights = model.greedy(src, max_len=9)
    beam_tokens, beam_weights = model.beam_search(src, max_len=9, width=1)
    assert torch.equal(tokens, beam_tokens)
    assert (weights is None) == (not attention) and (beam_weights is None) == (not attention)
    if attention:
        assert torch.allclose(weights, beam_weights)
    assert torch.equal(model.decode(src, 9, beam=1)[0], tokens)


def sequence_log_prob(model, src: torch.Tensor, outputs: list[list[int]]) -> torch.Tensor:
    """log p(output | src) under teacher forcing, with PAD and BOS excluded as the decoders do."""
    width = max(map(len, outputs))
    tgt_out = torch.tensor([o + [PAD] * (width - len(o)) for o in outputs])    # (N, T)
    tgt_in = torch.cat([torch.full((len(outputs), 1), BOS), tgt_out[:, :-1]], 1)
    tgt_in = tgt_in.masked_fill(tgt_in == PAD, EOS)  # after the end nothing is scored; any token will do
    logp = model._next_logp(model(src.expand(len(outputs), -1), tgt_in))     # (N, T, V)
    picked = logp.gather(-1, tgt_out[..., None])[..., 0]
    return picked.masked_fill(tgt_out == PAD, 0.0).sum(1)


@pytest.mark.parametrize("cell,attention", CELLS_AND_ATTENTION)
def test_wide_beam_finds_the_most_probable_output(cell, attention):
    """With a beam as wide as the whole tree of outputs, beam search is exhaustive search: it must return
    the output of highest log-probability, as scored independently by the teacher-forced forward pass."""
    model = small_model(cell=cell, attention=attention, tgt_vocab=6)  # 4 specials + 2 characters
    with torch.no_grad():  # long outputs must win, and depend on their whole history through the state
        model.decoder.embed.weight.mul_(4)
        model.decoder.maxout.weight[:, 16:16 + 8] = 0                   # the readout's direct E y_{i-1} term
        model.decoder.out.bias[EOS] = -20.0                             # stopping early is improbable
    chars, max_len = [3, 4, 5], 4  # UNK and two characters; PAD and BOS are never outputs
    outputs = [list(p) + [EOS] for n in range(max_len) for p in itertools.product(chars, repeat=n)]
    outputs += [list(p) for p in itertools.product(chars, repeat=max_len)]   # cut at max_len, no EOS
    assert len(outputs) == 1 + 3 + 9 + 27 + 81
    for row in random_sources(3, 12, 2, 6, seed=1):
        src = row[None, :int((row != PAD).sum())]
        scores = sequence_log_prob(model, src, outputs)
        tokens, _ = model.beam_search(src, max_len=max_len, width=len(outputs))
        found = [t for t in tokens[0].tolist() if t != PAD]
        assert found == outputs[int(scores.argmax())]
        assert len(found) == max_len and (scores.max() - scores.topk(2).values[1]) > 1e-4  # a clear winner
        # every hypothesis the beam keeps carries its true log-probability
        hyps, log_p, lengths, weights = model.hypotheses(src, max_len=max_len, width=len(outputs))
        kept = [[t for t in h if t != PAD] for h in hyps[0].tolist()]
        assert torch.allclose(log_p[0], scores[[outputs.index(h) for h in kept]], atol=1e-4)
        assert lengths[0].tolist() == [float(len(h)) for h in kept]
        if attention:  # and the attention weights its own tokens produce
            assert torch.allclose(weights[0], stepped_attention(model, src.expand(len(kept), -1), hyps[0]), atol=1e-6)
        # the greedy answer is never more probable than the exhaustive beam's
        greedy = [t for t in model.greedy(src, max_len)[0][0].tolist() if t != PAD]
        assert scores[outputs.index(greedy)] <= scores.max() + 1e-6


@pytest.mark.parametrize("cell,bidirectional,reverse", [("gru", True, False), ("lstm", True, False),
                                                        ("lstm", False, True)])
def test_attention_sums_to_one_and_ignores_padding(cell, bidirectional, reverse):
    model = small_model(cell=cell, attention=True, bidirectional=bidirectional, reverse_source=reverse)
    src = random_sources(12, 12, 1, 6)
    lengths = (src != PAD).sum(1)
    tokens, weights = model.greedy(src, max_len=8)                 # (B, T'), (B, T', S)
    live = tokens != PAD                                            # steps up to and including EOS
    assert torch.allclose(weights.sum(-1)[live], torch.ones(int(live.sum())), atol=1e-6)
    assert (weights[~live] == 0).all()
    padding = torch.arange(src.shape[1])[None, None] >= lengths[:, None, None]
    assert (weights.masked_select(padding.expand_as(weights)) == 0).all()  # exactly zero, not just small
    # more padding changes nothing: same tokens, same weights on the real positions, same logits
    longer = torch.cat([src, torch.full((12, 5), PAD)], 1)
    tokens2, weights2 = model.greedy(longer, max_len=8)
    assert torch.equal(tokens, tokens2)
    assert torch.allclose(weights, weights2[..., :src.shape[1]], atol=1e-6)
    assert (weights2[..., src.shape[1]:] == 0).all()
    tgt_in = torch.cat([torch.full((12, 1), BOS), tokens[:, :-1].clamp(min=4)], 1)
    assert torch.allclose(model(src, tgt_in), model(longer, tgt_in), atol=1e-5)
    beam_tokens, beam_weights = model.beam_search(src, 8, width=3)
    assert torch.equal(beam_tokens, model.beam_search(longer, 8, width=3)[0])
    # the beam's weights are those its own tokens produce, read back step by step
    assert torch.allclose(beam_weights, stepped_attention(model, src, beam_tokens), atol=1e-6)


def stepped_attention(model, src: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The attention weights (B, T, S) of the decoder fed `tokens` (zero rows after EOS)."""
    memory, summary, mask = model.encoder(src)
    state, keys = model.decoder.initial_state(summary), model.decoder.keys(memory)
    y, rows = torch.full((len(src),), BOS), []
    for t in range(tokens.shape[1]):
        _, state, a = model.decoder.step(y, state, memory, keys, mask)
        rows.append(a.masked_fill((tokens[:, t] == PAD)[:, None], 0.0))
        y = tokens[:, t]
    return torch.stack(rows, 1)


def test_beam_search_is_batched_not_per_sentence():
    """Each sentence decodes the same alone as in a batch (no cross-talk between beams of different sentences)."""
    model = small_model(attention=True)
    src = random_sources(6, 12, 2, 6, seed=3)
    batch, _ = model.beam_search(src, 7, width=4)
    for i in range(len(src)):
        alone, _ = model.beam_search(src[i:i + 1], 7, width=4)
        assert torch.equal(alone[0], batch[i, :alone.shape[1]]) and (batch[i, alone.shape[1]:] == PAD).all()


def test_exact_match_compares_whole_sequences():
    target = torch.tensor([[5, 6, EOS, PAD], [5, 6, EOS, PAD], [5, 6, EOS, PAD]])
    decoded = torch.tensor([[5, 6, EOS], [5, 6, 7], [5, EOS, PAD]])
    assert exact_match(decoded, target).tolist() == [True, False, False]


# ---- the dates data ------------------------------------------------------------------------------

STRPTIME = {"d": "%d", "dd": "%d", "m": "%m", "mm": "%m", "yy": "%y", "yyyy": "%Y", "Month": "%B", "Mon": "%b",
            "MON": "%b", "month": "%B", "Weekday": "%A", "Wkd": "%a", "weekday": "%A"}


def test_every_date_format_reads_back_to_its_date():
    days = [datetime.date(1950, 1, 1), datetime.date(1999, 12, 31), datetime.date(2000, 2, 29),
            datetime.date(2026, 11, 21), datetime.date(2049, 12, 31), datetime.date(1968, 7, 4)]
    rng = random.Random(0)
    days += [pairs.FIRST_DAY + datetime.timedelta(rng.randrange(36524)) for _ in range(200)]
    for form in pairs.FORMATS:
        pattern = form.format(**STRPTIME)
        for day in days:
            text = pairs.format_date(day, form)
            parsed = datetime.datetime.strptime(text, pattern).date()
            if parsed.year > 2049:  # strptime's %y pivot is 69; ours is 50 (the data spans 1950-2049)
                parsed = parsed.replace(year=parsed.year - 100)
            assert parsed == day, (form, text)
            if "eekday" in form or "Wkd" in form:  # the named weekday is the real one
                assert day.strftime("%a").lower() in text.lower()
    assert pairs.format_date(datetime.date(2026, 11, 21), "{Weekday}, {Mon} {d}, {yyyy}") == "Saturday, Nov 21, 2026"


def test_dates_are_deterministic_with_disjoint_splits():
    splits = pairs.dates_splits()
    assert splits == pairs.dates_splits()
    assert {k: len(v) for k, v in splits.items()} == pairs.DATES_SIZES
    days = {k: {iso for _, iso in v} for k, v in splits.items()}
    assert not (days["train"] & days["val"]) and not (days["train"] & days["test"]) and not (days["val"] & days["test"])
    assert all("1950-01-01" <= iso <= "2049-12-31" and len(iso) == 10 for v in days.values() for iso in v)
    for source, iso in splits["test"][:50]:  # each source is a rendering of its own target date
        assert any(pairs.format_date(datetime.date.fromisoformat(iso), f) == source for f in pairs.FORMATS)
    data = pairs.load("dates")
    src, tgt = data.train.tensors
    assert data.dims == {"src_vocab": len(data.spec["src_vocab"]), "tgt_vocab": 15}  # 4 specials, 10 digits, "-"
    assert (tgt[:, 0] == BOS).all() and ((tgt == EOS).sum(1) == 1).all() and (tgt[:, 11] == EOS).all()
    assert pairs.decode(src[:3], data.spec["src_vocab"]) == [s for s, _ in splits["train"][:3]]


# ---- users' TSV files ----------------------------------------------------------------------------

@pytest.mark.parametrize("content,message", [
    ("", "empty"),
    ("\n\n", "empty"),
    ("abc\tcba\nno tab here\n", "line 2: expected source<TAB>target"),
    ("a\tb\tc\n", "line 1: expected source<TAB>target"),
    ("abc\tcba\n\t xyz\n", "line 2: empty source"),
    ("abc\t \n", "line 1: empty target"),
    ("abc\tcba\n" * 5, "need at least 10"),
])
def test_tsv_errors_are_one_line_and_name_the_file(tmp_path, content, message):
    path = tmp_path / "pairs.tsv"
    path.write_text(content)
    with pytest.raises(DeepAtlasError, match=message) as err:
        pairs.load(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_tsv_other_errors(tmp_path):
    with pytest.raises(DeepAtlasError, match="no such file"):
        pairs.load(str(tmp_path / "missing.tsv"))
    binary = tmp_path / "bad.tsv"
    binary.write_bytes(b"\xff\xfe\x00abc\tdef\n")
    with pytest.raises(DeepAtlasError, match="not a UTF-8"):
        pairs.load(str(binary))
    with pytest.raises(DeepAtlasError, match="unknown dataset"):
        pairs.load("no-such-set")


def reverse_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdef") for _ in range(rng.randint(3, 6))) for _ in range(n)]
    return [(w, w[::-1]) for w in words]


def test_tsv_is_split_80_10_10_and_encoded(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"{s}\t{t}\n" for s, t in reverse_pairs(100, 0)) + "\n")
    data = get_task("translation").load(Data(data=str(path)))
    assert [len(d) for d in (data.train, data.val, data.test)] == [80, 10, 10]
    assert data.spec["tgt_vocab"][4:] == list("abcdef")
    labeled = pairs.read_labeled(data.spec, str(path))
    assert len(labeled) == 100 and labeled.tensors[1][0, 0] == BOS


# ---- learning ------------------------------------------------------------------------------------

SMALL = {"embed": "16", "hidden": "48", "attention_size": "24", "readout": "32"}


def test_seq2seq_learns_to_reverse_strings(tmp_path, capsys):
    """Reversing 3-6 letter strings: a model that ignores its input gets almost none right (1 in 6^3 at best)."""
    path = tmp_path / "reverse.tsv"
    path.write_text("".join(f"{s}\t{t}\n" for s, t in reverse_pairs(3000, 1)))
    result = deepatlas.train("seq2seq", data=str(path), out=tmp_path / "run",
                             overrides={**SMALL, "epochs": "3", "batch_size": "32", "lr": "0.01"})
    assert result["test"]["exact_match"] > 0.9, result["test"]
    objective = load(result["run_dir"]).objective
    spec = json.loads((Path(result["run_dir"]) / "config.json").read_text())["data"]
    out = pairs.predict(objective, spec, "abcfed")[0]
    assert (out["input"], out["predicted"]) == ("abcfed", "defcba")
    assert out["attention"]["target"] == [*"defcba", "<eos>"] and out["attention"]["source"] == list("abcfed")
    # the same through the command line, with the attention heat map saved as PNG
    code = cli.run(["predict", result["run_dir"], "abcfed", "--plot", str(tmp_path / "att.png")])
    assert code == 0 and "defcba" in capsys.readouterr().out
    assert (tmp_path / "att.png").read_bytes()[:4] == b"\x89PNG"


def test_predict_a_date_with_attention_weights(tmp_path):
    """A briefly trained dates model answers with a string and its attention map over the input's characters."""
    data = get_task("translation").load(Data(data="dates"))
    model = deepatlas.create_model("seq2seq", **data.dims, **{k: int(v) for k, v in SMALL.items()}, beam=2)
    objective = Translation(model)
    src, tgt = data.train.tensors
    fit_steps(objective, lambda: objective.training_step((src[:64], tgt[:64]))[0], steps=10)
    lines = tmp_path / "dates.txt"
    lines.write_text("Saturday, Nov 21, 2026\n\n21.11.2026\n")
    for text, n in (("Saturday, Nov 21, 2026", 1), (str(lines), 2)):
        out = pairs.predict(objective.eval(), data.spec, text)
        assert len(out) == n and out[0]["input"] == "Saturday, Nov 21, 2026"
        assert isinstance(out[0]["predicted"], str)
        att = out[0]["attention"]
        assert att["source"] == list("Saturday, Nov 21, 2026")
        assert len(att["weights"]) == len(att["target"]) and all(len(r) == 22 for r in att["weights"])
        assert all(abs(sum(r) - 1) < 1e-4 for r in att["weights"])
    with pytest.raises(DeepAtlasError, match="empty"):
        pairs.predict(objective, data.spec, "  ")
    with pytest.raises(DeepAtlasError, match="a folder"):
        pairs.predict(objective, data.spec, str(tmp_path))
