"""What the evolution entries share: a deterministic policy MLP and the evaluation of a whole population of its
weight vectors in parallel episodes.

A population is a matrix of flat weight vectors, one row per individual: (P, D) with D the policy's parameter
count. `population_act` runs all P policies at once on P observations (one environment copy each): the flat rows
are cut into the network's named parameters and the same module is called under `torch.func.vmap`, which turns
every layer into one batched matrix product over the population. `population_returns` plays one episode per
row in P copies of the environment stepped together (data/envs.py's `episode_returns`, the code `eval` uses).

Not an entry: `evolution_strategies` and `genetic` import it.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from deepatlas.data.envs import Environment, episode_returns
from deepatlas.tasks.rl import mlp


class Policy(nn.Module):
    """A deterministic policy: an MLP from observations to action scores. Discrete actions: the arg-max of
    `n_actions` logits. Continuous actions: tanh of the output scaled into the box [low, high] (the buffers,
    set from the environment by `set_bounds`, so they travel in model.safetensors)."""

    def __init__(self, obs_dim: int, n_actions: int = 0, action_dim: int = 0, hidden: int = 16, layers: int = 1):
        super().__init__()
        if (n_actions > 0) == (action_dim > 0):
            raise ValueError("give exactly one of n_actions (discrete) or action_dim (continuous)")
        self.continuous = action_dim > 0
        self.net = mlp([obs_dim, *[hidden] * layers, action_dim or n_actions], nn.Tanh, out_gain=0.01)
        self.register_buffer("low", -torch.ones(max(action_dim, 1)))
        self.register_buffer("high", torch.ones(max(action_dim, 1)))

    def set_bounds(self, env: Environment) -> None:
        if self.continuous:
            spec = env.spec["action"]
            self.low.copy_(torch.tensor(spec["low"]))
            self.high.copy_(torch.tensor(spec["high"]))

    def decide(self, out: Tensor) -> Tensor:
        """Network outputs (..., A) -> actions: arg-max index (...,), or the tanh-scaled mean (..., A)."""
        if self.continuous:
            return self.low + (torch.tanh(out) + 1) / 2 * (self.high - self.low)
        return out.argmax(-1)

    def forward(self, obs: Tensor) -> Tensor:
        """obs (n, obs_dim) -> actions."""
        return self.decide(self.net(obs))

    # ---- flat weight vectors ---------------------------------------------------------------------------------
    def flat(self) -> Tensor:
        """This policy's parameters as one vector theta (D,)."""
        return torch.cat([p.detach().flatten() for p in self.net.parameters()])

    def load_flat(self, theta: Tensor) -> None:
        """Copy a flat vector (D,) into the network's parameters."""
        torch.nn.utils.vector_to_parameters(theta.detach().to(self.low.device), self.net.parameters())

    def unflatten(self, population: Tensor) -> dict[str, Tensor]:
        """(P, D) -> {name: (P, *shape)} for every parameter of the network."""
        shapes = {name: p.shape for name, p in self.net.named_parameters()}
        sizes = [math.prod(s) for s in shapes.values()]
        pieces = population.split(sizes, dim=1)                                       # each (P, numel)
        return {name: piece.reshape(len(population), *shape) for (name, shape), piece in zip(shapes.items(), pieces)}


@torch.no_grad()
def population_act(policy: Policy, population: Tensor, obs: Tensor) -> Tensor:
    """P policies on P observations at once: population (P, D), obs (P, obs_dim) -> actions (P,) or (P, A).
    vmap maps the module over the rows, so each Linear layer is one batched product (P, in) x (P, in, out)."""
    params = policy.unflatten(population)
    one = lambda p, o: functional_call(policy.net, p, (o[None],))[0]                  # (obs_dim,) -> (A,)
    return policy.decide(vmap(one)(params, obs))                                     # (P, A) -> actions


@torch.no_grad()
def population_returns(policy: Policy, population: Tensor, env: Environment, seeds: list[int]) -> Tensor:
    """One episode per row of `population` (P, D), episode i seeded by seeds[i], all P stepped together in a
    vectorized environment -> undiscounted returns (P,) float32 on the population's device."""
    act = lambda obs: population_act(policy, population, obs.to(population.device))
    return episode_returns(act, env, seeds, population.device).to(population.device, torch.float32)
