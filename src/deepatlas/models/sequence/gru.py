"""GRU: the gated recurrent unit.

K. Cho, B. van Merriënboer, C. Gulcehre, D. Bahdanau, F. Bougares, H. Schwenk, Y. Bengio, 2014.
"Learning Phrase Representations using RNN Encoder-Decoder for Statistical Machine Translation."
arXiv:1406.1078. (Compared with the LSTM in J. Chung et al., 2014, arXiv:1412.3555.)

A lighter gated cell with no separate memory: an update gate z interpolates between the old state
and a candidate n, and a reset gate r decides how much of the old state the candidate may read.
When z stays near 1 the state (and the error) passes through unchanged, which gives the GRU the
LSTM's long memory with three gate blocks instead of four and no output gate.

    r = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

(torch's convention, in which z is the fraction kept; the paper writes h_t = z ⊙ h_{t-1} + (1 - z)
⊙ h̃ the same way, and applies r before W_hn, a variant that gives the same model class.) The cell
is written out, with its back-propagation through time, in `deepatlas.nn.recurrent`; stacked
layers, bidirectional reading (Schuster & Paliwal 1997) and dropout between layers are config fields.
"""
from __future__ import annotations

from dataclasses import dataclass

from deepatlas.catalog import Bar, Entry, Paper, Recipe, register
from deepatlas.nn.recurrent import Init, RecurrentNet
from deepatlas.tasks.sequence import SequenceObjective


@dataclass
class Config:
    in_features: int = 2
    """input features per time step (set from the data)"""
    n_outputs: int = 1
    """outputs: 1 for regression, the number of classes for classification (set from the data)"""
    per_step: bool = False
    """one output per time step (many-to-many) instead of one from the final state (set from the data)"""
    hidden: int = 64
    """units per layer and direction"""
    layers: int = 1
    """stacked GRU layers"""
    bidirectional: bool = False
    """add a second GRU per layer reading the sequence backwards; their states are concatenated"""
    dropout: float = 0.0
    """dropout between stacked layers"""
    init: Init = "uniform"
    """weights: uniform U(-1/√H, 1/√H) (torch's default), or orthogonal W_hh with Xavier W_ih and zero biases"""
    chrono: int = 0
    """chrono init (Tallec & Ollivier 2018): update-gate biases log U(1, chrono - 1) (memory up to chrono steps); 0: off"""


def build(cfg: Config) -> RecurrentNet:
    return RecurrentNet("gru", cfg)


register(Entry(
    name="gru", title="GRU (gated recurrent unit)", family="sequence", year=2014,
    paper=Paper("K. Cho, B. van Merriënboer, C. Gulcehre, D. Bahdanau, F. Bougares, H. Schwenk, Y. Bengio",
                "Learning Phrase Representations using RNN Encoder-Decoder for Statistical Machine Translation",
                "arXiv:1406.1078"),
    summary="A gated recurrent cell without a separate memory: an update gate blends the old state with a "
            "candidate that a reset gate lets read the past; long memory with fewer parameters than the LSTM.",
    when_to_use="The same sequence problems as the LSTM (long-range dependencies, tagging, forecasting) with "
                "25% fewer recurrent weights; often as good and quicker to train on small data.",
    when_not="Very long sequences that must train fast (TCN or transformer); tasks that need counting or an "
             "unbounded memory, where the LSTM's separate cell does better; purely local patterns (CNN).",
    related=["lstm", "rnn", "tcn", "seq2seq"],
    config=Config, build=build, objective=SequenceObjective, task="sequence",
    recipe=Recipe(data="adding-200", epochs=2, batch_size=64, lr=1e-2, grad_clip=1.0),
    bar=Bar("mse", 0.01, "min", 180),
))
