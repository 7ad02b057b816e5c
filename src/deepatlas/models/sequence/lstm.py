"""LSTM: long short-term memory, with the forget gate.

S. Hochreiter, J. Schmidhuber, 1997. "Long Short-Term Memory." Neural Computation 9(8), 1735-1780.
F. A. Gers, J. Schmidhuber, F. Cummins, 2000. "Learning to Forget: Continual Prediction with
LSTM." Neural Computation 12(10), 2451-2471.

A recurrent cell with a separate memory c_t that is updated additively: an input gate i decides
what to write, a forget gate f what to keep (Gers et al.'s addition), an output gate o what to
show. Because c_{t-1} reaches c_t through f ⊙ c_{t-1} rather than through a squashing
nonlinearity, the error flows back over hundreds of steps when f stays near 1 — the "constant
error carousel" that the vanilla RNN lacks.

    i, f, o = σ(W_i,f,o [x_t; h_{t-1}] + b),   g = tanh(W_g [x_t; h_{t-1}] + b_g)
    c_t = f ⊙ c_{t-1} + i ⊙ g,                  h_t = o ⊙ tanh(c_t)

The cell is written out (and its back-propagation through time) in `deepatlas.nn.recurrent`;
stacked layers, bidirectional reading (Schuster & Paliwal 1997) and dropout between layers are
config fields. The forget gates' initial biases decide how long the memory lasts before training:
1.0 (Jozefowicz et al. 2015), or the chrono initialization of Tallec & Ollivier 2018
(arXiv:1804.11188), b_f ~ log U(1, T_max - 1) and b_i = -b_f, which spreads the time scales up to a
horizon T_max. With it (T_max = 200) and Adam at 1e-2 the 200-step adding problem opens after 300-600
updates; with a forget bias of 1 instead, the same recipe stays at the trivial MSE of 1/6 throughout.
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
    """stacked LSTM layers"""
    bidirectional: bool = False
    """add a second LSTM per layer reading the sequence backwards; their states are concatenated"""
    dropout: float = 0.0
    """dropout between stacked layers"""
    init: Init = "uniform"
    """weights: uniform U(-1/√H, 1/√H) (torch's default), or orthogonal W_hh with Xavier W_ih and zero biases"""
    forget_bias: float = 1.0
    """forget-gate bias at init when chrono is 0 (σ(1) ≈ 0.73 keeps memory longer from the start)"""
    chrono: int = 200
    """chrono init: forget biases log U(1, chrono - 1), input biases their negative (memory up to chrono steps); 0: off"""


def build(cfg: Config) -> RecurrentNet:
    return RecurrentNet("lstm", cfg)


register(Entry(
    name="lstm", title="LSTM (long short-term memory)", family="sequence", year=1997,
    paper=Paper("S. Hochreiter, J. Schmidhuber (forget gate: F. A. Gers, J. Schmidhuber, F. Cummins, 2000)",
                "Long Short-Term Memory", "Neural Computation 9(8), 1735-1780, 1997"),
    summary="A recurrent cell with a gated, additively updated memory: input, forget and output gates decide "
            "what to write, keep and show, so errors flow back over hundreds of steps.",
    when_to_use="Sequences with long-range dependencies read one step at a time: classification, tagging "
                "(bidirectional), forecasting, streaming with a small state; the robust recurrent default.",
    when_not="Very long sequences that must train fast (TCN or transformer run all steps in parallel); "
             "short, local patterns where a CNN or plain RNN is enough; when a GRU's fewer parameters suffice.",
    related=["rnn", "gru", "tcn", "seq2seq"],
    config=Config, build=build, objective=SequenceObjective, task="sequence",
    recipe=Recipe(data="adding-200", epochs=2, batch_size=64, lr=1e-2, grad_clip=1.0),
    bar=Bar("mse", 0.01, "min", 180),
    more_bars=[Bar("accuracy", 0.95, "max", 30,
                   overrides={"data": "future-tagging", "bidirectional": "true", "epochs": "2"})],
))
