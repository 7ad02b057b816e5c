"""Reinforcement learning: methods that learn from reward by interacting with an environment."""
