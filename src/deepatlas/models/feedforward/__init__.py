"""Feedforward networks: the perceptron, the MLP and its residual form."""
