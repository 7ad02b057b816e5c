"""AlphaZero: Monte-Carlo tree search guided by a policy-value network, learned from self-play alone.

D. Silver, T. Hubert, J. Schrittwieser, I. Antonoglou, M. Lai, A. Guez, M. Lanctot, L. Sifre, D. Kumaran,
T. Graepel, T. Lillicrap, K. Simonyan, D. Hassabis, 2017. "Mastering Chess and Shogi by Self-Play with a General
Reinforcement Learning Algorithm." arXiv:1712.01815. And D. Silver, J. Schrittwieser, K. Simonyan et al., 2017.
"Mastering the game of Go without human knowledge." Nature 550, 354-359 (AlphaGo Zero).

One network f_theta(s) = (p, v) gives move probabilities p (over the 9 cells, occupied cells masked out) and a
value v in [-1, 1] (tanh) of position s for the player to move. A search tree is grown from the position to play
by `simulations` walks from the root; each walk descends by the PUCT rule

    a* = argmax_a  Q(s,a) + c_puct P(s,a) sqrt(N(s)) / (1 + N(s,a)),     Q(s,a) = W(s,a) / N(s,a)  (0 unvisited)

until it reaches a position not yet in the tree, which is expanded with the network's priors P(s,.) = p and
valued by its v (no rollouts; a finished game is valued by its result), and v is backed up the path, its sign
flipping at each ply (each node's statistics are from its own mover's side). The visit counts at the root
give the search's improved policy pi(a|s) = N(s,a)^(1/tau) / sum_b N(s,b)^(1/tau).

Self-play: both sides play by the search, with Dirichlet noise mixed into the root's priors,
P = (1 - eps) p + eps Dir(alpha), and moves sampled from pi at temperature tau = 1 for the first
`temperature_moves` moves, the most-visited move after. Each position yields (s, pi, z), z = +1/-1/0 the game's
outcome from the side of the player who moved in s. The network is trained on recent positions by

    l = (z - v)^2 - pi^T log p + c ||theta||^2

and the loop alternates self-play and training. Search trees are built afresh for every move (no transposition
table). The evaluation plays the search (no noise, most-visited move) against a perfect minimax player and a
random player (data/boardgames.py).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deepatlas.catalog import (Bar, Count, Data, Entry, NonNegative, Paper, Positive, Probability, Relation, Size,
                              Train, register)
from deepatlas.data.boardgames import TicTacToe, perfect_move, random_move
from deepatlas.data.envs import TEST_SEED, VAL_SEED, Environment
from deepatlas.tasks.rl import Algorithm, mlp


@dataclass
class Config:
    obs_dim: Size = 18
    """size of game.encode(s) flattened: 2 planes of 3x3 (set from the environment)"""
    n_actions: Size = 9
    """board cells, one move each (set from the environment)"""
    action_dim: Count = 0
    """unused: moves are discrete (set from the environment)"""
    hidden: Size = 64
    """units per hidden layer of the network's trunk"""
    layers: Size = 2
    """hidden layers of the trunk shared by the policy and value heads"""
    iterations: Size = 40
    """self-play-then-train iterations; training stops earlier at the time budget or the recipe's stop_at"""
    games_per_iteration: Size = 32
    """self-play games per iteration, played together (their leaves evaluated in one network call)"""
    simulations: Size = 32
    """MCTS simulations per move in self-play"""
    eval_simulations: Size = 128
    """MCTS simulations per move when evaluated and shown"""
    c_puct: NonNegative = 1.5
    """exploration constant of the PUCT rule"""
    dirichlet_alpha: Positive = 1.0
    """Dirichlet concentration of the root noise (the paper's 0.3 for chess ~ 10 / typical legal moves)"""
    noise_fraction: Probability = 0.25
    """eps: the root priors' share given to the noise during self-play"""
    temperature_moves: Count = 9
    """self-play moves sampled at temperature 1 from the visit counts, later ones the most visited (9: the whole
    game, as the papers' first 30 moves cover most of a chess or Go opening; the value then prices in the
    opponent's possible errors, which wins more against a random player)"""
    replay_window: Size = 10000
    """positions kept for training (the most recent ones)"""
    minibatch: Size = 128
    """positions per training step"""
    train_steps: Size = 20
    """gradient steps after each iteration's self-play"""
    l2: NonNegative = 1e-4
    """c: weight of ||theta||^2 in the loss"""
    symmetries: bool = True
    """train on a random one of the board's 8 rotations and reflections of each position (AlphaGo Zero's
    augmentation; AlphaZero dropped it for chess and shogi, whose rules are not symmetric)"""
    games: Size = 50
    """evaluation games against the perfect player (the agent first in half), unless --episodes asks otherwise"""
    random_games: Size = 100
    """evaluation games against the random player (the agent first in half), unless --episodes asks otherwise"""
    validate_every: Size = 5
    """iterations between validations (games against the perfect and random players with validation seeds)"""


class PolicyValueNet(nn.Module):
    """f_theta(s) = (log p, v): an MLP trunk over the flattened (2, 3, 3) planes, a policy head (9 logits,
    occupied cells masked) and a tanh value head."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: int, layers: int):
        super().__init__()
        self.trunk = nn.Sequential(mlp([obs_dim, *[hidden] * layers], nn.ReLU), nn.ReLU())
        self.policy = nn.Linear(hidden, n_actions)
        self.value = nn.Linear(hidden, 1)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """obs (B, 18) -> log p (B, 9) (-inf on occupied cells), v (B,) in [-1, 1]."""
        h = self.trunk(obs)                                                    # (B, hidden)
        legal = obs.view(len(obs), 2, -1).sum(1) == 0                          # (B, 9) empty cells
        log_p = F.log_softmax(self.policy(h).masked_fill(~legal, -math.inf), -1)
        return log_p, torch.tanh(self.value(h)).squeeze(-1)


# ---- Monte-Carlo tree search -------------------------------------------------------------------------------

class Node:
    """A position in a search tree: its priors P(s,.), visit counts N(s,.) and total values W(s,.) per move (from
    this node's mover's side), its own visit count N(s) (1 at expansion, +1 per walk through it) and children."""

    __slots__ = ("children", "count", "illegal", "position", "prior", "q", "result", "values", "visits")

    def __init__(self, game, position):
        self.position = position
        winner = game.winner(position)
        # a finished game's value for the player to move in it: -1 if the previous mover won, 0 for a draw
        self.result = None if winner is None else float(winner * game.to_move(position))
        self.prior: np.ndarray | None = None                                   # (9,), None until expanded
        self.count = 0
        self.visits = np.zeros(game.n_actions)                                 # N(s, a)
        self.values = np.zeros(game.n_actions)                                 # W(s, a)
        self.q = np.zeros(game.n_actions)                                      # Q(s, a) = W / N, 0 unvisited
        self.illegal: np.ndarray | None = None                                 # (9,) -inf on occupied cells, else 0
        self.children: dict[int, Node] = {}

    def expand(self, prior: np.ndarray) -> None:
        self.prior, self.count = prior, 1
        self.illegal = np.where(np.array(self.position) != 0, -np.inf, 0.0)

    def update(self, a: int, v: float) -> None:
        """One walk through move a, worth v to this node's mover."""
        self.visits[a] += 1
        self.values[a] += v
        self.q[a] = self.values[a] / self.visits[a]
        self.count += 1

    def puct(self, c_puct: float) -> np.ndarray:
        """Q(s,a) + c_puct P(s,a) sqrt(N(s)) / (1 + N(s,a)) per move (9,); -inf on occupied cells.
        N(s) counts the node's expansion as its first visit (as the published pseudocode does), so the priors
        already order the moves of a node's first walk."""
        u = (c_puct * math.sqrt(self.count)) * self.prior / (1 + self.visits)
        return self.q + u + self.illegal


class MCTS:
    """Searches from several positions at once, one tree each: every simulation walks each tree down to a leaf,
    then all the leaves are valued in one network call (`evaluate`: a list of positions -> priors (n, 9),
    values (n,) for the player to move), expanded and backed up."""

    def __init__(self, game, evaluate, c_puct: float):
        self.game, self.evaluate, self.c_puct = game, evaluate, c_puct

    def search(self, positions: list, simulations: int, noise: tuple[float, float] | None = None,
               rng: np.random.Generator | None = None) -> tuple[np.ndarray, list[Node]]:
        """-> root visit counts N(s_root, .) (n, 9) and the roots. `noise` = (alpha, eps): Dirichlet noise mixed
        into each root's priors (self-play only)."""
        roots = [Node(self.game, s) for s in positions]
        priors, _ = self.evaluate(positions)
        for root, prior in zip(roots, priors):
            if noise is not None:
                alpha, eps = noise
                legal = np.array(root.position) == 0                          # (9,) empty cells
                prior = prior.copy()
                prior[legal] = (1 - eps) * prior[legal] + eps * rng.dirichlet([alpha] * int(legal.sum()))
            root.expand(prior)
        for _ in range(simulations):  # each simulation depends on the statistics of the previous: sequential
            paths, leaves = [], []
            for root in roots:
                node, path = root, []
                while node.prior is not None and node.result is None:        # descend by PUCT to a new leaf
                    a = int(np.argmax(node.puct(self.c_puct)))
                    path.append((node, a))
                    if a not in node.children:
                        node.children[a] = Node(self.game, self.game.play(node.position, a))
                    node = node.children[a]
                paths.append(path)
                leaves.append(node)
            fresh = [i for i, leaf in enumerate(leaves) if leaf.result is None]  # finished games need no network
            value = [leaf.result for leaf in leaves]                           # v for each leaf's mover
            if fresh:
                priors, values = self.evaluate([leaves[i].position for i in fresh])
                for i, prior, v in zip(fresh, priors, values):
                    leaves[i].expand(prior)
                    value[i] = float(v)
            for path, v in zip(paths, value):
                for node, a in reversed(path):                                 # back up, flipping the side
                    v = -v                                                     # value for the parent's mover
                    node.update(a, v)
        return np.stack([root.visits for root in roots]), roots


def dihedral() -> Tensor:
    """The 8 rotations and reflections of the 3x3 board as cell permutations (8, 9): cell i of the transformed
    board is cell perm[i] of the original."""
    grid = torch.arange(9).view(3, 3)
    return torch.stack([torch.rot90(g, k).flatten() for g in (grid, grid.T) for k in range(4)])


# ---- the algorithm -----------------------------------------------------------------------------------------

class AlphaZero(Algorithm):
    metric = "losses_vs_perfect"
    action_kinds = ("discrete",)
    not_exported = "a tree search (MCTS) guided by the network"

    def __init__(self, model: PolicyValueNet, cfg: Config):
        super().__init__(model)
        self.cfg = cfg

    def check(self, env: Environment, name: str) -> None:
        from deepatlas.errors import DeepAtlasError
        if env.spec["kind"] != "board":
            raise DeepAtlasError(f"--data {env.id}: {name} plays two-player board games (tictactoe), "
                                 "not single-agent environments")

    def export_inputs(self, env: Environment, n: int) -> dict[str, Tensor]:
        """The empty board, n times (what `info --summary` runs the network on)."""
        game = env.make()
        return {"observation": game.encode(game.initial()).flatten()[None].expand(n, -1)}

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """The raw policy head's most likely move (the search is what plays in evaluation): (B, 18) -> (B,)."""
        return self.model(obs)[0].argmax(-1)

    @torch.no_grad()
    def network(self, game, positions: list) -> tuple[np.ndarray, np.ndarray]:
        """Positions -> priors p (n, 9) and values v (n,) for the player to move, in one batched call."""
        device = next(self.parameters()).device
        obs = torch.stack([game.encode(s) for s in positions]).flatten(1).to(device)  # (n, 18)
        log_p, v = self.model(obs)
        return log_p.exp().cpu().numpy().astype(np.float64), v.cpu().numpy().astype(np.float64)

    def mcts(self, game) -> MCTS:
        return MCTS(game, lambda positions: self.network(game, positions), self.cfg.c_puct)

    def self_play(self, game, rng: np.random.Generator) -> dict[str, Tensor]:
        """`games_per_iteration` games of the search against itself, played together -> positions seen
        {"obs" (M, 18), "pi" (M, 9) root visit distributions, "z" (M,) outcomes from each mover's side}."""
        cfg, mcts = self.cfg, self.mcts(game)
        positions = [game.initial()] * cfg.games_per_iteration
        seen: list[list[tuple]] = [[] for _ in positions]                      # per game: (s, pi, mover)
        active = list(range(len(positions)))
        ply = 0
        while active:
            visits, _ = mcts.search([positions[g] for g in active], cfg.simulations,
                                    (cfg.dirichlet_alpha, cfg.noise_fraction), rng)  # (n, 9)
            pi = visits / visits.sum(1, keepdims=True)                         # tau = 1 targets
            for g, counts, target in zip(active, visits, pi):
                s = positions[g]
                seen[g].append((s, target, game.to_move(s)))
                # tau = 1 for the first moves (sample in proportion to N), tau -> 0 after (the most visited)
                move = int(rng.choice(len(counts), p=target)) if ply < cfg.temperature_moves else int(counts.argmax())
                positions[g] = game.play(s, move)
            active = [g for g in active if game.winner(positions[g]) is None]
            ply += 1
        obs, pis, zs = [], [], []
        for g, history in enumerate(seen):
            winner = game.winner(positions[g])                                 # +1, -1 or 0 (draw)
            for s, target, mover in history:
                obs.append(game.encode(s).flatten())
                pis.append(torch.as_tensor(target, dtype=torch.float32))
                zs.append(float(winner * mover))                               # z from the mover's side
        return {"obs": torch.stack(obs), "pi": torch.stack(pis), "z": torch.tensor(zs)}

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """l = (z - v)^2 - pi^T log p + c ||theta||^2, averaged over the batch."""
        log_p, v = self.model(batch["obs"])                                    # (B, 9), (B,)
        value_loss = (batch["z"] - v).pow(2).mean()
        policy_loss = -(batch["pi"] * log_p.masked_fill(batch["pi"] == 0, 0.0)).sum(-1).mean()  # 0 log 0 = 0
        l2 = sum(p.pow(2).sum() for p in self.model.parameters())
        return {"loss": value_loss + policy_loss + self.cfg.l2 * l2, "value_loss": value_loss,
                "policy_loss": policy_loss}

    def learn(self, ctx) -> None:
        cfg, game, device = self.cfg, ctx.env.make(), ctx.device
        optimizer = torch.optim.Adam(self.parameters(), lr=ctx.train.lr)
        state = ctx.restore({"network": optimizer}) or {"iteration": 0}
        buffer = {k: state[k].to(device) for k in ("obs", "pi", "z")} if "obs" in state else None
        symmetries = dihedral().to(device)                                     # (8, 9)
        while state["iteration"] < cfg.iterations and not ctx.should_stop():
            # ---- self-play with the current network
            self.eval()
            played = {k: v.to(device) for k, v in self.self_play(game, ctx.rng).items()}
            self.train()
            buffer = played if buffer is None else {k: torch.cat([buffer[k], played[k]])[-cfg.replay_window:]
                                                    for k in played}
            # ---- training on positions sampled from the recent window
            for _ in range(cfg.train_steps):
                index = torch.randint(len(buffer["z"]), (cfg.minibatch,), generator=ctx.generator).to(device)
                batch = {k: v[index] for k, v in buffer.items()}
                if cfg.symmetries:  # the same random permutation of the cells for a position and its pi
                    perm = symmetries[torch.randint(8, (cfg.minibatch,), generator=ctx.generator).to(device)]
                    obs = batch["obs"].view(-1, 2, 9)                          # (B, 2, 9)
                    batch["obs"] = obs.gather(2, perm[:, None].expand(-1, 2, -1)).flatten(1)  # (B, 18)
                    batch["pi"] = batch["pi"].gather(1, perm)                  # (B, 9)
                logs = self.loss(batch)
                optimizer.zero_grad(set_to_none=True)
                logs["loss"].backward()
                optimizer.step()
            state["iteration"] += 1
            ctx.log(state["iteration"], {**{k: v.item() for k, v in logs.items()}, "positions": len(buffer["z"])})
            ctx.progress(state["iteration"], cfg.iterations, f"loss {logs['loss'].item():.3f}")
            if state["iteration"] % cfg.validate_every == 0 or state["iteration"] == cfg.iterations:
                ctx.validate(state["iteration"])
                ctx.checkpoint({"network": optimizer}, {**state, **{k: v.cpu() for k, v in buffer.items()}})

    # ---- evaluation: games against fixed opponents ---------------------------------------------------------

    @torch.no_grad()
    def tournament(self, game, opponent, games: int, seed: int) -> list[int]:
        """`games` games of the search (no noise, most-visited move) against `opponent(game, s, rng)`, the agent
        first in the even ones, all played together; game i's opponent draws from random.Random(seed + i).
        -> results from the agent's side (+1 win, 0 draw, -1 loss)."""
        was_training = self.training
        self.eval()
        mcts = self.mcts(game)
        rngs = [random.Random(seed + i) for i in range(games)]
        side = [1 if i % 2 == 0 else -1 for i in range(games)]                 # the agent's stones
        positions = [game.initial()] * games
        active = list(range(games))
        while active:
            ours = [g for g in active if game.to_move(positions[g]) == side[g]]
            if ours:
                visits, _ = mcts.search([positions[g] for g in ours], self.cfg.eval_simulations)
                for g, counts in zip(ours, visits):
                    positions[g] = game.play(positions[g], int(counts.argmax()))
            for g in active:
                if g not in ours:
                    positions[g] = game.play(positions[g], opponent(game, positions[g], rngs[g]))
            active = [g for g in active if game.winner(positions[g]) is None]
        self.train(was_training)
        return [game.winner(s) * side[g] for g, s in enumerate(positions)]

    def evaluate(self, env: Environment, split: str = "test", episodes: int | None = None) -> dict[str, float]:
        """`games` games against the perfect minimax player and `random_games` against the random player (or
        `episodes` each when given: `eval --episodes N`), the opponents' random choices seeded by the split."""
        game = env.make()
        default = episodes is None
        base = VAL_SEED if split == "val" else TEST_SEED
        perfect = self.tournament(game, perfect_move, self.cfg.games if default else episodes, base)
        rand = self.tournament(game, random_move, self.cfg.random_games if default else episodes, base + 100_000)
        return {"losses_vs_perfect": float(perfect.count(-1)), "draw_rate_vs_perfect": perfect.count(0) / len(perfect),
                "win_rate_vs_random": rand.count(1) / len(rand), "losses_vs_random": float(rand.count(-1))}

    @torch.no_grad()
    def show_game(self, env: Environment) -> list[dict]:
        """`deepatlas predict RUN`: one game, the agent (X) first against the perfect player, board by board."""
        game, mcts = env.make(), self.mcts(env.make())
        rng, s, boards = random.Random(TEST_SEED), game.initial(), []
        while game.winner(s) is None:
            agent = game.to_move(s) == 1
            move = (int(mcts.search([s], self.cfg.eval_simulations)[0][0].argmax()) if agent
                    else perfect_move(game, s, rng))
            s = game.play(s, move)
            boards.append(f"{'agent (X)' if agent else 'perfect player (O)'} plays {move}:\n{game.render(s)}")
        outcome = {1: "win", 0: "draw", -1: "loss"}[game.winner(s)]
        return [{"input": env.id, "predicted": outcome, "game": "\n\n".join(boards)}]

    def play(self, human_first: bool = True, ask=input, say=print) -> int:
        """Play against the agent in the terminal: cells are numbered 0-8 on the board shown. -> +1 if you win."""
        game = TicTacToe()
        mcts, s = self.mcts(game), game.initial()
        human = 1 if human_first else -1
        while game.winner(s) is None:
            say(game.render(s))
            if game.to_move(s) == human:
                move = -1
                while move not in game.legal(s):
                    answer = ask(f"your move {game.legal(s)}: ").strip()
                    move = int(answer) if answer.isdigit() else -1
            else:
                move = int(mcts.search([s], self.cfg.eval_simulations)[0][0].argmax())
                say(f"agent plays {move}")
            s = game.play(s, move)
        say(game.render(s))
        result = game.winner(s) * human
        say({1: "you win", 0: "draw", -1: "the agent wins"}[result])
        return result


def build(cfg: Config) -> AlphaZero:
    return AlphaZero(PolicyValueNet(cfg.obs_dim, cfg.n_actions, cfg.hidden, cfg.layers), cfg)


register(Entry(
    name="alphazero", title="AlphaZero (self-play MCTS with a policy-value network)", family="rl", year=2017,
    paper=Paper("D. Silver, T. Hubert, J. Schrittwieser et al.",
                "Mastering Chess and Shogi by Self-Play with a General Reinforcement Learning Algorithm",
                "arXiv:1712.01815, 2017; and Mastering the game of Go without human knowledge, Nature 550, 2017"),
    summary="Plays itself with Monte-Carlo tree search whose PUCT rule is guided by a network's move priors and "
            "values, and trains the network toward the search's visit counts and the games' outcomes.",
    when_to_use="Two-player, perfect-information games with a known simulator (board games, puzzles): no human "
                "data needed, and the search makes the trained network play far above its raw policy.",
    when_not="Unknown or stochastic dynamics without a model (see mpc or model-free methods), single-agent "
             "control with continuous actions, or when each move cannot afford many network evaluations.",
    relations=[
        Relation("alternative_to", "dqn", "plans with tree search guided by a policy-value network, trained by "
                 "self-play"),
    ],
    config=Config, build=build, objective=lambda model: model, task="rl",
    # no stop_at: the first validation without a loss to the perfect player can come (iteration 5) before the
    # play against the random player is sharp; 40 iterations take about a third of the budget, and the latest
    # loss-free validation's weights are kept
    train_keys=("stop_at", "lr"),
    train=Train(lr=1e-3),
    data=Data("tictactoe"),
    bar=Bar("losses_vs_perfect", 0.0, "min", 300),
    more_bars=[Bar("win_rate_vs_random", 0.9, "max", 300)],
))
