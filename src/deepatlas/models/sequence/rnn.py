"""The simple recurrent network (Elman network).

J. L. Elman, 1990. "Finding Structure in Time." Cognitive Science 14(2), 179-211.
(Trained by back-propagation through time: D. E. Rumelhart, G. E. Hinton, R. J. Williams, 1986;
P. J. Werbos, 1990.)

A hidden layer that also reads its own previous state, so the same weights process every step of
a sequence of any length and the state h_t summarizes everything seen so far:

    h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

The error reaching step t - k is multiplied k times by W_hh^T diag(tanh'): it vanishes (or
explodes) geometrically, so dependencies longer than a few dozen steps are out of reach (Bengio,
Simard & Frasconi 1994) — what the LSTM and GRU gates fix. The recurrence and its
back-propagation through time are written out in `deepatlas.nn.recurrent`; stacked layers,
bidirectional reading (Schuster & Paliwal 1997) and dropout between layers are config fields.
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
    hidden: int = 128
    """units per layer and direction"""
    layers: int = 1
    """stacked recurrent layers"""
    bidirectional: bool = False
    """add a second RNN per layer reading the sequence backwards; their states are concatenated"""
    dropout: float = 0.0
    """dropout between stacked layers"""
    init: Init = "orthogonal"
    """weights: orthogonal W_hh, Xavier W_ih, zero biases (gradients keep their norm longer), or uniform (torch's)"""


def build(cfg: Config) -> RecurrentNet:
    return RecurrentNet("rnn", cfg)


register(Entry(
    name="rnn", title="Elman RNN (simple recurrent network)", family="sequence", year=1990,
    paper=Paper("J. L. Elman", "Finding Structure in Time", "Cognitive Science 14(2), 179-211, 1990"),
    summary="One tanh layer that reads the input and its own previous state at every step: the same "
            "weights for any sequence length, but a memory that fades within tens of steps.",
    when_to_use="Short sequences and short dependencies; a baseline that shows what gating buys; tiny "
                "models and streaming where every multiply counts.",
    when_not="Dependencies longer than a few dozen steps (vanishing gradients: use an LSTM, GRU or TCN); "
             "long sequences that must train fast (TCN, transformer).",
    related=["lstm", "gru", "tcn", "mlp"],
    config=Config, build=build, objective=SequenceObjective, task="sequence",
    recipe=Recipe(data="adding-50", epochs=5, batch_size=64, lr=1e-3, grad_clip=1.0),
    bar=Bar("mse", 0.05, "min", 120),
))
