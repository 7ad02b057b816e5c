"""Two-player board games for self-play methods (AlphaZero), with a perfect minimax player to measure them.

A position is an immutable tuple of cells (+1: the first player's stone, -1: the second's, 0: empty), so it
can key a cache; the player to move follows from the stone counts. Values are from the point of view of the
player to move: +1 win, 0 draw, -1 loss under perfect play.

    game = TicTacToe()
    s = game.play(game.initial(), 4)        # first player takes the centre
    game.legal(s), game.winner(s), game.encode(s)   # moves, +1/-1/0/None, (2, 3, 3) planes
    perfect_move(game, s, rng)              # a minimax-optimal move (ties broken at random)
"""
from __future__ import annotations

import functools
import random
from collections.abc import Callable

import torch
from torch import Tensor

Position = tuple[int, ...]
Player = Callable[[Position], int]  # a position -> the move to play


class TicTacToe:
    name = "tictactoe"
    rows = cols = 3
    n_actions = 9
    observation_shape = (2, 3, 3)
    LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))

    def initial(self) -> Position:
        return (0,) * 9

    def to_move(self, s: Position) -> int:
        """+1 when the first player is to move, -1 for the second."""
        return 1 if s.count(1) == s.count(-1) else -1

    def legal(self, s: Position) -> list[int]:
        return [i for i, c in enumerate(s) if c == 0] if self.winner(s) is None else []

    def play(self, s: Position, move: int) -> Position:
        if s[move] != 0:
            raise ValueError(f"cell {move} is taken")
        return s[:move] + (self.to_move(s),) + s[move + 1:]

    def winner(self, s: Position) -> int | None:
        """+1 or -1 for the player with three in a line, 0 for a full board without one, None while play goes on."""
        for a, b, c in self.LINES:
            if s[a] != 0 and s[a] == s[b] == s[c]:
                return s[a]
        return 0 if 0 not in s else None

    def encode(self, s: Position) -> Tensor:
        """(2, 3, 3) float planes from the mover's side: its own stones, then the opponent's."""
        board = torch.tensor(s, dtype=torch.float32).view(3, 3) * self.to_move(s)
        return torch.stack([(board == 1).float(), (board == -1).float()])

    def render(self, s: Position) -> str:
        marks = {1: "X", -1: "O", 0: "."}
        return "\n".join(" ".join(marks[s[r * 3 + c]] if s[r * 3 + c] else str(r * 3 + c) for c in range(3))
                         for r in range(3))


GAMES = {"tictactoe": TicTacToe}


@functools.cache
def _value(game_name: str, s: Position) -> int:
    """Minimax value for the player to move (memoized: tic-tac-toe has 5,478 reachable positions)."""
    game = GAMES[game_name]()
    w = game.winner(s)
    if w is not None:
        return w * game.to_move(s)  # 0 on a draw; a finished game was won by the player who just moved: -1
    return max(-_value(game_name, game.play(s, m)) for m in game.legal(s))


def move_values(game, s: Position) -> dict[int, int]:
    """Each legal move's minimax value for the player making it."""
    return {m: -_value(game.name, game.play(s, m)) for m in game.legal(s)}


def perfect_move(game, s: Position, rng: random.Random) -> int:
    """A minimax-optimal move; among equally good ones, a random one (so matches are not one game repeated)."""
    values = move_values(game, s)
    best = max(values.values())
    return rng.choice([m for m, v in values.items() if v == best])


def random_move(game, s: Position, rng: random.Random) -> int:
    return rng.choice(game.legal(s))


def play_game(game, first: Player, second: Player) -> int:
    """One game: +1 if `first` wins, -1 if `second` wins, 0 for a draw."""
    s, players = game.initial(), (first, second)
    while game.winner(s) is None:
        s = game.play(s, players[0 if game.to_move(s) == 1 else 1](s))
    return game.winner(s)


def match(game, agent: Player, opponent: Player, games: int) -> dict[str, float]:
    """`games` games, the agent moving first in half of them -> {"wins", "draws", "losses"} counts for the agent."""
    results = [play_game(game, agent, opponent) if i % 2 == 0 else -play_game(game, opponent, agent)
               for i in range(games)]
    return {"wins": float(results.count(1)), "draws": float(results.count(0)), "losses": float(results.count(-1))}
