"""Tests of "alphazero": the PUCT rule, MCTS on crafted positions with a uniform prior, the self-play targets,
and a short learning run against the random player."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import deepatlas
from deepatlas.data.boardgames import TicTacToe
from deepatlas.data.envs import Environment, describe
from deepatlas.models.rl.alphazero import MCTS, Config, Node, build, dihedral


def uniform(game):
    """A dummy network: uniform priors over the empty cells, value 0 everywhere."""
    def evaluate(positions):
        empty = np.array([[c == 0 for c in s] for s in positions], dtype=np.float64)  # (n, 9)
        return empty / empty.sum(1, keepdims=True), np.zeros(len(positions))
    return evaluate


def board(text: str) -> tuple[int, ...]:
    return tuple({"X": 1, "O": -1, ".": 0}[c] for c in text.replace(" ", ""))


GAME = TicTacToe()


@pytest.mark.parametrize("position, best", [
    ("XX. OO. ...", 2),  # X to move wins on the top row (rather than blocking O at 5)
    ("O.. OX. ..X", 6),  # X to move, no win: blocks O's left column
    ("X.. .X. O..", 8),  # O to move, no win: blocks X's diagonal
    ("XX. OO. X..", 5),  # O to move wins on the middle row (rather than blocking X at 2)
])
def test_mcts_uniform_prior_finds_the_winning_or_saving_move(position, best):
    s = board(position)
    visits, _ = MCTS(GAME, uniform(GAME), c_puct=1.5).search([s], 400)
    assert int(visits[0].argmax()) == best


def test_mcts_searches_many_positions_together():
    positions = [board("XX. OO. ..."), board("O.. OX. ..X"), board("X.. .X. O.."), board("XX. OO. X..")]
    visits, _ = MCTS(GAME, uniform(GAME), c_puct=1.5).search(positions, 400)
    assert [int(v.argmax()) for v in visits] == [2, 6, 8, 5]


def test_puct_equals_the_formula_on_a_crafted_node():
    node = Node(GAME, board("X.. .O. ..."))
    prior = np.array([0, .2, .1, .1, 0, .3, .1, .1, .1])
    node.expand(prior)
    for a, v in [(1, 1.0), (1, 0.5), (1, 0.0), (2, -1.0), (5, 1.0), (5, 0.5), (5, 0.5), (5, 0.5), (5, 0.0),
                 (6, 0.4), (6, 0.0)]:
        node.update(a, v)
    assert node.visits.tolist() == [0, 3, 1, 0, 0, 5, 2, 0, 0] and node.count == 12
    assert node.values.tolist() == pytest.approx([0, 1.5, -1, 0, 0, 2.5, 0.4, 0, 0])
    scores = node.puct(c_puct=2.0)
    for a in range(9):
        if prior[a] == 0:
            assert scores[a] == -math.inf
        else:
            q = node.values[a] / node.visits[a] if node.visits[a] else 0.0
            assert scores[a] == pytest.approx(q + 2.0 * prior[a] * math.sqrt(12) / (1 + node.visits[a]))


def test_illegal_moves_get_no_prior_and_no_visits_and_visits_are_a_distribution():
    env = Environment(describe("tictactoe"))
    model = build(Config(**env.dims))
    s = board("XO. .X. O..")
    priors, _ = model.network(GAME, [s])
    occupied = np.array([c != 0 for c in s])
    assert (priors[0][occupied] == 0).all() and priors[0].sum() == pytest.approx(1.0)
    visits, roots = model.mcts(GAME).search([s], 50, noise=(1.0, 0.25), rng=np.random.default_rng(0))
    assert (visits[0][occupied] == 0).all() and (roots[0].prior[occupied] == 0).all()
    pi = visits[0] / visits[0].sum()
    assert pi.sum() == pytest.approx(1.0) and visits[0].sum() == 50


def test_self_play_targets_are_from_each_movers_side():
    env = Environment(describe("tictactoe"))
    model = build(Config(**env.dims, games_per_iteration=16, simulations=8))
    data = model.self_play(GAME, np.random.default_rng(0))
    assert torch.allclose(data["pi"].sum(1), torch.ones(len(data["pi"])))
    starts = [i for i, o in enumerate(data["obs"]) if o.sum() == 0] + [len(data["obs"])]  # empty boards
    assert len(starts) == 17
    for a, b in itertools.pairwise(starts):
        obs, z = data["obs"][a:b].view(-1, 2, 9), data["z"][a:b]
        mover = torch.where(obs[:, 0].sum(1) == obs[:, 1].sum(1), 1.0, -1.0)  # X moves when the counts are equal
        winner = z * mover                                                  # the same for every position of a game
        assert (winner == winner[0]).all()
        assert z[-1] in (0.0, 1.0)                                          # the last mover won or drew
        assert (z[:-1] == -z[1:]).all()                                     # sides alternate


def test_symmetries_are_permutations():
    perms = dihedral()
    assert perms.shape == (8, 9) and len({tuple(p.tolist()) for p in perms}) == 8
    assert all(sorted(p.tolist()) == list(range(9)) for p in perms)


class Context:
    """The few parts of the engine's context (engine/interact.py) that `learn` uses, without a run directory."""

    def __init__(self, env, seed: int = 0):
        from deepatlas.catalog import Data, Train
        self.env, self.device = env, torch.device("cpu")
        self.train, self.options = Train(lr=3e-3), Data("tictactoe")
        self.rng, self.generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
        self.validations = 0

    def restore(self, optimizers):
        return None

    def should_stop(self):
        return False

    def log(self, step, values):
        pass

    def progress(self, done, total, info=""):
        pass

    def validate(self, step):
        self.validations += 1

    def checkpoint(self, optimizers, state):
        assert {"iteration", "obs", "pi", "z"} <= set(state)


def test_a_few_iterations_beat_the_untrained_network_against_random():
    """Learning test: with one simulation a move the play is the network's own policy; ten short iterations of
    self-play must lift it far above the untrained network against the random player (seconds)."""
    from deepatlas.data.boardgames import random_move

    env = Environment(describe("tictactoe"))
    cfg = Config(**env.dims, games_per_iteration=16, simulations=8, eval_simulations=1, iterations=10,
                 train_steps=20, validate_every=5)
    torch.manual_seed(0)
    model = build(cfg)
    game = env.make()
    score = lambda results: sum(r == 1 for r in results) - sum(r == -1 for r in results)  # wins - losses
    before = score(model.tournament(game, random_move, 100, 7))
    ctx = Context(env)
    model.learn(ctx)
    after = score(model.tournament(game, random_move, 100, 7))
    assert ctx.validations == 2
    assert after >= before + 30 and after >= 50, (before, after)


def test_play_in_the_terminal_finishes_a_game():
    """`deepatlas play`: the human's moves come from `ask` (here: always the first legal cell), the agent answers."""
    agent = deepatlas.create_model("alphazero")
    shown = []
    asked = []
    first_legal = lambda prompt: asked.append(prompt) or prompt[prompt.index("[") + 1:].split(",")[0].rstrip("]")
    result = agent.play(human_first=True, ask=first_legal, say=shown.append)
    assert result in (-1, 0, 1) and shown[-1] in ("you win", "draw", "the agent wins")
    answers = sum(line.startswith("agent plays") for line in shown)
    assert answers in (len(asked), len(asked) - 1) and answers >= 3  # the agent answered every human move
