"""Recurrent networks ("rnn", "lstm", "gru"): equal to torch.nn's, bidirectional, stateful, learning."""
import math

import pytest
import torch

import deepatlas
from deepatlas.errors import DeepAtlasError
from deepatlas.models.sequence.gru import GRU_CELL
from deepatlas.models.sequence.lstm import LSTM_CELL
from deepatlas.models.sequence.rnn import RNN_CELL
from deepatlas.nn.recurrent import Recurrent

TORCH = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
CELLS = ["rnn", "lstm", "gru"]
CELL = {"rnn": RNN_CELL, "lstm": LSTM_CELL, "gru": GRU_CELL}  # each cell's equations live in its model file


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


# ---- the same function as torch.nn.RNN / LSTM / GRU --------------------------------------------

@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch_outputs_states_and_gradients(cell, bidirectional):
    """Our weights load into torch's module by name; outputs, final states and every gradient agree."""
    torch.manual_seed(0)
    D = 2 if bidirectional else 1
    ours = Recurrent(CELL[cell], 5, 7, num_layers=2, bidirectional=bidirectional).double()
    ref = TORCH[cell](5, 7, num_layers=2, bidirectional=bidirectional, batch_first=True).double()
    ref.load_state_dict(ours.state_dict())  # same names, same shapes: strict load
    x = torch.randn(3, 9, 5, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2 * D, 3, 7, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2 * D, 3, 7, dtype=torch.float64, requires_grad=True)
    state = (h0, c0) if cell == "lstm" else h0
    out, final = ours(x, state)
    ref_out, ref_final = ref(x, state)
    assert out.shape == (3, 9, 7 * D)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    for a, b in zip(as_tuple(final), as_tuple(ref_final), strict=True):
        assert a.shape == (2 * D, 3, 7)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    # a loss on outputs and final states reaches inputs, initial states and all weights alike
    w = torch.randn_like(out)
    inputs = [x, h0, c0] if cell == "lstm" else [x, h0]
    grads = [torch.autograd.grad((o * w).sum() + sum(s.square().sum() for s in as_tuple(f)),
                                 inputs + list(m.parameters()))
             for m, o, f in ((ours, out, final), (ref, ref_out, ref_final))]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch_in_float32_without_initial_state(cell):
    torch.manual_seed(1)
    ours = Recurrent(CELL[cell], 4, 16, num_layers=2, bidirectional=True)
    ref = TORCH[cell](4, 16, num_layers=2, bidirectional=True, batch_first=True)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(8, 30, 4)
    (out, final), (ref_out, ref_final) = ours(x), ref(x)
    assert (out - ref_out).abs().max() < 1e-5
    assert all((a - b).abs().max() < 1e-5 for a, b in zip(as_tuple(final), as_tuple(ref_final)))


@pytest.mark.parametrize("cell", CELLS)
def test_hand_written_bptt_passes_gradcheck(cell):
    """The back-propagation through time written in rnn.py, lstm.py and gru.py against finite differences."""
    torch.manual_seed(0)
    layer = Recurrent(CELL[cell], 3, 4, bidirectional=True).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)
    state = (h0, torch.randn_like(h0).requires_grad_()) if cell == "lstm" else h0

    def f(x, *state):
        out, final = layer(x, state if cell == "lstm" else state[0])
        return out, *as_tuple(final)
    assert torch.autograd.gradcheck(f, (x, *as_tuple(state)))


def test_gates_follow_torchs_order_and_the_lstm_equations():
    """One LSTM step by hand from the weights' i, f, g, o blocks: c = f c0 + i g, h = o tanh(c)."""
    torch.manual_seed(0)
    layer = Recurrent(LSTM_CELL, 3, 5).double()
    x, h0, c0 = (torch.randn(2, 1, 3).double(), torch.randn(1, 2, 5).double(), torch.randn(1, 2, 5).double())
    _, (h, c) = layer(x, (h0, c0))
    pre = x[:, 0] @ layer.weight_ih_l0.T + layer.bias_ih_l0 + h0[0] @ layer.weight_hh_l0.T + layer.bias_hh_l0
    i, f, g, o = pre.chunk(4, -1)
    c_hand = f.sigmoid() * c0[0] + i.sigmoid() * g.tanh()
    torch.testing.assert_close(c[0], c_hand)
    torch.testing.assert_close(h[0], o.sigmoid() * c_hand.tanh())


def test_one_gru_step_and_one_elman_step_follow_their_equations():
    """r, z, n from the weights' r, z, n blocks: h = (1 - z) n + z h0; and h = tanh(W_ih x + b_ih + W_hh h0 + b_hh)."""
    torch.manual_seed(0)
    x, h0 = torch.randn(2, 1, 3).double(), torch.randn(1, 2, 5).double()
    gru = Recurrent(GRU_CELL, 3, 5).double()
    _, h = gru(x, h0)
    x_r, x_z, x_n = (x[:, 0] @ gru.weight_ih_l0.T + gru.bias_ih_l0).chunk(3, -1)
    h_r, h_z, h_n = (h0[0] @ gru.weight_hh_l0.T + gru.bias_hh_l0).chunk(3, -1)
    r, z = (x_r + h_r).sigmoid(), (x_z + h_z).sigmoid()
    n = (x_n + r * h_n).tanh()
    torch.testing.assert_close(h[0], (1 - z) * n + z * h0[0])
    rnn = Recurrent(RNN_CELL, 3, 5).double()
    _, h = rnn(x, h0)
    pre = x[:, 0] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h0[0] @ rnn.weight_hh_l0.T + rnn.bias_hh_l0
    torch.testing.assert_close(h[0], pre.tanh())


def test_the_layer_driver_imports_no_architecture():
    """nn/recurrent.py stacks layers of any cell it is handed; the cells' equations live in the model files."""
    import ast
    import inspect

    import deepatlas.nn.recurrent as recurrent
    imported = [n.module for n in ast.walk(ast.parse(inspect.getsource(recurrent))) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in imported if m and m.startswith("deepatlas.models")]
    assert (RNN_CELL.gates, LSTM_CELL.gates, GRU_CELL.gates) == (1, 4, 3)
    assert LSTM_CELL.memory and not GRU_CELL.memory and GRU_CELL.bias_hh_in_scan


# ---- bidirectional reading sees the future, unidirectional does not ---------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_bidirectional_output_at_t_sees_later_inputs(cell):
    torch.manual_seed(0)
    x = torch.randn(2, 12, 3, dtype=torch.float64)
    later = x.clone()
    later[:, 7] += 1.0                                         # change step t + 1 = 7 only
    for bidirectional in (False, True):
        model = deepatlas.create_model(cell, in_features=3, n_outputs=2, per_step=True, hidden=8,
                                       bidirectional=bidirectional).double()
        out, changed = model(x), model(later)                  # (B, T, K)
        assert torch.equal(out[:, :7], changed[:, :7]) != bidirectional
        assert not torch.allclose(out[:, 7:], changed[:, 7:])


def test_bidirectional_many_to_one_reads_both_final_states():
    torch.manual_seed(0)
    model = deepatlas.create_model("gru", in_features=3, n_outputs=1, hidden=8, bidirectional=True, layers=2)
    x = torch.randn(4, 10, 3)
    out, h_n = model.rnn(x)                                    # (B, T, 2H), (layers * 2, B, H)
    summary = model.final_state(h_n)                           # (B, 2H)
    torch.testing.assert_close(summary[:, :8], out[:, -1, :8])  # forward direction: its last step
    torch.testing.assert_close(summary[:, 8:], out[:, 0, 8:])   # backward direction: it ends at step 0
    torch.testing.assert_close(model(x), model.head(summary))


# ---- shapes: many-to-one, many-to-many, one-to-many ------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_output_shapes(cell):
    x = torch.randn(4, 11, 3)
    for bidirectional in (False, True):
        kw = {"in_features": 3, "n_outputs": 5, "hidden": 6, "layers": 2, "bidirectional": bidirectional}
        assert deepatlas.create_model(cell, per_step=False, **kw)(x).shape == (4, 5)
        assert deepatlas.create_model(cell, per_step=True, **kw)(x).shape == (4, 11, 5)
    model = deepatlas.create_model(cell, in_features=3, n_outputs=3, hidden=6)
    assert model.generate(x, 7).shape == (4, 7, 3)


@pytest.mark.parametrize("cell", CELLS)
def test_generate_feeds_its_predictions_back(cell):
    """generate carries the state; it equals re-reading the whole extended sequence at every step."""
    torch.manual_seed(0)
    model = deepatlas.create_model(cell, in_features=2, n_outputs=2, hidden=8, layers=2).double().eval()
    x = torch.randn(3, 6, 2, dtype=torch.float64)
    rollout = model.generate(x, 4)                             # (B, 4, 2)
    seq = x
    for k in range(4):
        nxt = model(seq)                                       # many-to-one: the next value from the prefix
        torch.testing.assert_close(rollout[:, k], nxt)
        seq = torch.cat([seq, nxt[:, None]], 1)
    with pytest.raises(DeepAtlasError, match="bidirectional"):
        deepatlas.create_model(cell, in_features=2, n_outputs=2, bidirectional=True).generate(x.float(), 2)
    with pytest.raises(DeepAtlasError, match="n_outputs"):
        deepatlas.create_model(cell, in_features=2, n_outputs=1).generate(x.float(), 2)


@pytest.mark.parametrize("cell", CELLS)
def test_state_carries_across_calls(cell):
    """Reading a sequence in two halves with the state handed over equals reading it at once."""
    torch.manual_seed(0)
    layer = Recurrent(CELL[cell], 3, 6, num_layers=2).double()
    x = torch.randn(2, 10, 3, dtype=torch.float64)
    out, final = layer(x)
    first, mid = layer(x[:, :4])
    second, final2 = layer(x[:, 4:], mid)
    torch.testing.assert_close(torch.cat([first, second], 1), out)
    for a, b in zip(as_tuple(final), as_tuple(final2)):
        torch.testing.assert_close(a, b)


# ---- initialization, dropout, errors ------------------------------------------------------------

def test_forget_gate_and_chrono_initialization():
    H = 16
    lstm = Recurrent(LSTM_CELL, 2, H, num_layers=2, forget_bias=1.0)
    for k in range(2):
        b_f = getattr(lstm, f"bias_ih_l{k}")[H:2 * H] + getattr(lstm, f"bias_hh_l{k}")[H:2 * H]
        assert torch.equal(b_f, torch.ones(H))
    chrono = Recurrent(LSTM_CELL, 2, H, chrono=200)
    b = chrono.bias_ih_l0 + chrono.bias_hh_l0
    b_i, b_f = b[:H], b[H:2 * H]
    assert b_f.min() >= 0 and b_f.max() <= math.log(199) and b_f.std() > 0.5   # time scales 1..199 steps
    torch.testing.assert_close(b_i, -b_f)
    gru = Recurrent(GRU_CELL, 2, H, chrono=100)
    b_z = (gru.bias_ih_l0 + gru.bias_hh_l0)[H:2 * H]             # torch's z keeps h_{t-1}
    assert b_z.min() >= 0 and b_z.max() <= math.log(99)
    ortho = Recurrent(RNN_CELL, 2, H, init="orthogonal")
    w = ortho.weight_hh_l0
    torch.testing.assert_close(w @ w.T, torch.eye(H), atol=1e-5, rtol=0)
    assert ortho.bias_ih_l0.abs().sum() == 0


def test_dropout_acts_between_layers_in_training_only():
    torch.manual_seed(0)
    layer = Recurrent(LSTM_CELL, 3, 8, num_layers=2, dropout=0.5)
    x = torch.randn(4, 6, 3)
    layer.train()
    assert not torch.equal(layer(x)[0], layer(x)[0])
    layer.eval()
    assert torch.equal(layer(x)[0], layer(x)[0])
    single = Recurrent(LSTM_CELL, 3, 8, num_layers=1, dropout=0.5).train()  # nothing between layers
    assert torch.equal(single(x)[0], single(x)[0])


@pytest.mark.parametrize("cell", CELLS)
def test_runs_under_bfloat16_autocast(cell):
    """--precision bf16-mixed: the projection comes out in bfloat16 and the recurrence follows it."""
    torch.manual_seed(0)
    layer = Recurrent(CELL[cell], 3, 8, bidirectional=True)
    x = torch.randn(4, 6, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = layer(x)
    assert out.dtype == torch.bfloat16
    assert (out.float() - layer(x)[0]).abs().max() < 0.05
    out.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_bad_inputs_get_one_line_errors():
    layer = Recurrent(GRU_CELL, 3, 8)
    with pytest.raises(DeepAtlasError, match="expects input"):
        layer(torch.randn(4, 6, 5))
    with pytest.raises(DeepAtlasError, match="state must be"):
        layer(torch.randn(4, 6, 3), torch.zeros(2, 4, 8))
    with pytest.raises(DeepAtlasError, match="tuple"):
        Recurrent(LSTM_CELL, 3, 8)(torch.randn(4, 6, 3), torch.zeros(1, 4, 8))
    with pytest.raises(DeepAtlasError, match="unknown recurrent cell"):
        Recurrent("transformer", 3, 8)


# ---- a few seconds of training beat the trivial baselines -------------------------------------

@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_short_training_reads_digits_row_by_row(name, tmp_path):
    """Many-to-one: an 8x8 digit read as 8 rows of 8 pixels; chance is 0.10."""
    overrides = {"data": "seq-digits", "hidden": "32", "epochs": "8", "batch_size": "32", "lr": "1e-2"}
    if name == "lstm":
        overrides["chrono"] = "8"  # memory time scales up to the sequence's length, not adding-200's
    result = deepatlas.train(name, out=tmp_path / name, overrides=overrides)
    assert result["test"]["accuracy"] > 0.8


def test_bidirectional_lstm_learns_to_tag_from_the_future(tmp_path):
    """Many-to-many: y_t = [x_{t+1} > x_t]. Reading the past alone caps accuracy at 0.7625; a
    bidirectional LSTM sees x_{t+1} and goes far past that in one short epoch."""
    runs = {bi: deepatlas.train("lstm", out=tmp_path / bi, overrides={
        "data": "future-tagging", "bidirectional": bi, "hidden": "16", "epochs": "1"}) for bi in ("false", "true")}
    assert runs["false"]["test"]["accuracy"] < 0.78
    assert runs["true"]["test"]["accuracy"] > 0.9
