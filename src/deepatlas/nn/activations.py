"""Activation functions by name, for configs that choose one."""
from typing import Literal

from torch import nn

Activation = Literal["relu", "gelu", "tanh", "sigmoid", "silu"]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "silu": nn.SiLU}


def activation(name: Activation) -> nn.Module:
    return _ACTIVATIONS[name]()
