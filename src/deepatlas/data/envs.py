"""Environments for the rl and evolution families (task "rl"): gymnasium ids and the project's board games.

The "data" of a reinforcement-learning run is an environment, named by `--data` (or `--env`): any gymnasium
id (`CartPole-v1`, `Acrobot-v1`, `Pendulum-v1`, `MountainCar-v0` are the embedded defaults, shipped inside
gymnasium) or a board game written here (`tictactoe`, see data/boardgames.py). What plays the role of the
fixed train/val/test split is a fixed set of episode seeds: training episodes are seeded from the run's seed,
validation episodes from VAL_SEED and test episodes from TEST_SEED, so `eval` scores every run on the same
20 test episodes. `baseline` plays a random policy on those same episodes (the trivial yardstick `eval` prints);
`act` gives a trained policy's action for a raw observation (what a loaded run's `act` calls).

    spec = {"env": id, "kind": "gym" | "board", "observation_shape": [...],
            "action": {"kind": "discrete", "n": A} | {"kind": "continuous", "dim": D, "low": [...], "high": [...]}}
    dims = {"obs_dim": prod(observation_shape), "n_actions": A or 0, "action_dim": D or 0}
"""
from __future__ import annotations

import difflib
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from deepatlas.errors import DeepAtlasError, option

EMBEDDED = ("CartPole-v1", "Acrobot-v1", "Pendulum-v1", "MountainCar-v0", "tictactoe")
BOARD_GAMES = ("tictactoe",)
VAL_SEED, TEST_SEED = 1_000_000, 2_000_000  # episode seeds of the held-out "splits"
EPISODES = 20                                # evaluation episodes (the bars' 20)


@dataclass
class Environment:
    """What `load_for` returns for task "rl": the environment's spec and the sizes a config takes from it."""
    spec: dict

    @property
    def id(self) -> str:
        return self.spec["env"]

    @property
    def discrete(self) -> bool:
        return self.spec["action"]["kind"] == "discrete"

    @property
    def dims(self) -> dict[str, int]:
        action = self.spec["action"]
        return {"obs_dim": int(math.prod(self.spec["observation_shape"])),
                "n_actions": action.get("n", 0), "action_dim": action.get("dim", 0)}

    def make(self, render: bool = False):
        """One environment (a gymnasium Env, or the board game)."""
        if self.spec["kind"] == "board":
            from deepatlas.data import boardgames
            return boardgames.GAMES[self.id]()
        import gymnasium as gym
        return gym.make(self.id, **({"render_mode": "rgb_array"} if render else {}))

    def make_vector(self, n: int):
        """`n` copies stepped together (gymnasium's SyncVectorEnv). An episode that ends is reset within the same
        step: the observation returned is the new episode's first, and the last one of the episode that ended
        is in `info["final_obs"]` (to bootstrap a value at a time-limit truncation)."""
        if self.spec["kind"] == "board":
            raise DeepAtlasError(f"{self.id} is a two-player board game: it has no vectorized single-agent form")
        import gymnasium as gym
        return gym.vector.SyncVectorEnv([lambda: gym.make(self.id) for _ in range(n)],
                                        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)

    def require(self, kinds: tuple[str, ...], name: str) -> None:
        """A clear error when method `name` cannot act in this environment's action space."""
        kind = self.spec["action"]["kind"]
        if kind not in kinds:
            raise DeepAtlasError(f"{self.id}: {name} needs {' or '.join(kinds)} actions, "
                                 f"but {self.id} has {kind} actions")


def load_for(options, target: str | None = None) -> Environment:
    if target is not None:
        raise DeepAtlasError(f"{option('target')}: an environment has no target column")
    return Environment(describe(options.data))


def describe(env_id: str) -> dict:
    """The spec of an environment id, or a one-line error (unknown id, unsupported space)."""
    if env_id in BOARD_GAMES:
        from deepatlas.data import boardgames
        game = boardgames.GAMES[env_id]
        return {"env": env_id, "kind": "board", "observation_shape": list(game.observation_shape),
                "action": {"kind": "discrete", "n": game.n_actions}}
    if Path(env_id).exists():
        raise DeepAtlasError(f"{env_id}: reinforcement learning takes an environment id "
                             f"(a gymnasium id such as CartPole-v1, or {', '.join(BOARD_GAMES)}), not a file")
    import gymnasium as gym
    from gymnasium import spaces
    try:
        with warnings.catch_warnings():  # gymnasium's own deprecation notes; our error below says it in one line
            warnings.simplefilter("ignore")
            env = gym.make(env_id)
    except gym.error.DependencyNotInstalled as err:  # a registered id whose extra is missing (Box2D, MuJoCo)
        raise DeepAtlasError(missing_extra(env_id, str(err))) from None
    except gym.error.NamespaceNotFound as err:  # ALE/..., an id whose package registers it on import
        raise DeepAtlasError(f"{env_id}: no environments of this namespace are installed ({str(err).splitlines()[0]})"
                             ) from None
    except gym.error.Error as err:
        close = difflib.get_close_matches(env_id, [*gym.registry, *BOARD_GAMES], n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DeepAtlasError(f"{env_id}: not a gymnasium environment ({str(err).splitlines()[0]}){hint}") from None
    except ImportError as err:  # an environment module importing something absent, without gymnasium's wording
        raise DeepAtlasError(f"{env_id}: needs a package that is not installed ({err})") from None
    obs, act = env.observation_space, env.action_space
    env.close()
    if not isinstance(obs, spaces.Box):
        raise DeepAtlasError(f"{env_id}: observations are {type(obs).__name__}; only Box (vector) "
                             "observations are supported")
    if isinstance(act, spaces.Discrete):
        action = {"kind": "discrete", "n": int(act.n)}
    elif isinstance(act, spaces.Box) and len(act.shape) == 1:
        action = {"kind": "continuous", "dim": int(act.shape[0]), "low": act.low.tolist(), "high": act.high.tolist()}
    else:
        raise DeepAtlasError(f"{env_id}: action space {act} is neither Discrete nor a 1-D Box")
    return {"env": env_id, "kind": "gym", "observation_shape": list(obs.shape), "action": action}


def missing_extra(env_id: str, reason: str) -> str:
    """One line for an environment gymnasium knows but cannot build here: what is missing and how to install it,
    from gymnasium's own wording ("Box2D is not installed, you can install it by run `pip install swig` followed by
    `pip install "gymnasium[box2d]"`")."""
    package = re.match(r"\s*(\S+) is not installed", reason)
    commands = re.findall(r"`(pip install [^`]+)`", reason)
    if not (package and commands):
        return f"{env_id}: needs a package that is not installed ({reason.splitlines()[0]})"
    return f"{env_id} needs {package[1]}, which is not installed; install it with: {', then '.join(commands)}"


def episode_seeds(split: str, episodes: int = EPISODES) -> list[int]:
    """The fixed seeds of a held-out split's episodes."""
    if split not in ("val", "test"):
        raise DeepAtlasError(f"split must be val or test, not {split!r}")
    start = VAL_SEED if split == "val" else TEST_SEED
    return list(range(start, start + episodes))


@torch.no_grad()
def episode_returns(act, env: Environment, seeds: list[int], device: torch.device | str = "cpu") -> Tensor:
    """Undiscounted return of one episode per seed, all played together: `act(obs (n, obs_dim) float32 tensor)
    -> actions (n,) or (n, D)` is called once per time step on every environment still running. -> (n,) float64."""
    vector = env.make_vector(len(seeds))
    try:
        obs, _ = vector.reset(seed=seeds)
        returns = np.zeros(len(seeds))
        running = np.ones(len(seeds), dtype=bool)
        while running.any():
            actions = act(torch.as_tensor(obs, dtype=torch.float32, device=device).flatten(1))
            obs, reward, terminated, truncated, _ = vector.step(actions.cpu().numpy())
            returns += np.where(running, reward, 0.0)  # an ended episode's copy restarts; its rewards no longer count
            running &= ~(terminated | truncated)
    finally:
        vector.close()
    return torch.from_numpy(returns)


def summarize_returns(returns: Tensor) -> dict[str, float]:
    return {"mean_return": returns.mean().item(), "std_return": returns.std(unbiased=False).item()}


def render_episode(act, env: Environment, out: Path, seed: int = TEST_SEED, fps: int = 30, max_frames: int = 1000) -> dict:
    """Play one episode with `act` and save it as an animated GIF (gymnasium's rgb_array frames; classic control
    needs pygame). -> {"return", "steps", "file"}."""
    import gymnasium as gym
    from PIL import Image
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame draws off-screen: no display, no warnings
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    try:
        single = env.make(render=True)
    except (ImportError, gym.error.Error) as err:  # DependencyNotInstalled without pygame
        raise DeepAtlasError(f"--render: {env.id} cannot draw frames here ({str(err).splitlines()[0]})") from None
    obs, _ = single.reset(seed=seed)
    frames, total, done = [single.render()], 0.0, False
    while not done and len(frames) < max_frames:
        action = act(torch.as_tensor(obs, dtype=torch.float32)[None].flatten(1))[0].cpu().numpy()
        obs, reward, terminated, truncated, _ = single.step(action if action.ndim else int(action))
        total += float(reward)
        done = terminated or truncated
        frames.append(single.render())
    single.close()
    images = [Image.fromarray(f).convert("P", palette=Image.ADAPTIVE) for f in frames[::2]]
    out.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(out, save_all=True, append_images=images[1:], duration=int(2000 / fps), loop=0)
    return {"return": total, "steps": len(frames) - 1, "file": str(out)}


def predict(objective, spec: dict, render: Path | None = None) -> list[dict]:
    """`deepatlas predict RUN [--out episode.gif]`: play one test episode with the trained policy (saved as a GIF
    with `render`); a board-game method shows a game in text instead (its `show_game(env)`)."""
    env = Environment(spec)
    objective.use_env(env)
    if env.spec["kind"] == "board":
        if render is not None:
            raise DeepAtlasError(f"--out: {env.id} games are shown as text, not drawn")
        return objective.show_game(env)
    if render is not None:
        played = render_episode(objective.act, env, render)
    else:
        played = {"return": episode_returns(objective.act, env, [TEST_SEED]).item()}
    return [{"input": env.id, "predicted": f"return {played['return']:.1f}", **played}]


@torch.no_grad()
def act(objective, spec: dict, observation):
    """The trained policy's action (its `act`: greedy, or the distribution's mode) for one observation (an array or
    nested list of the environment's observation shape) or a batch of them (one more leading axis), in the action
    space: an int for Discrete (an int array for a batch), a float32 array clipped into the Box otherwise."""
    env = Environment(spec)
    shape = tuple(spec["observation_shape"])
    try:
        obs = np.asarray(observation, dtype=np.float32)
    except (TypeError, ValueError):
        raise DeepAtlasError(f"{env.id}: an observation is an array of numbers of shape {shape}") from None
    single = obs.shape == shape
    if not single and obs.shape[1:] != shape:
        raise DeepAtlasError(f"{env.id}: an observation has shape {shape} (or (n, {', '.join(map(str, shape))}) "
                             f"for n of them), not {obs.shape}")
    objective.use_env(env)
    device = next(objective.parameters(), torch.empty(0)).device
    action = objective.act(torch.as_tensor(obs, device=device).reshape(1 if single else len(obs), -1)).cpu()
    if env.discrete:
        action = action.long().numpy()
        return int(action[0]) if single else action
    box = spec["action"]
    # a Gaussian policy's mean may lie outside the box
    action = np.clip(action.float().numpy(), np.float32(box["low"]), np.float32(box["high"]))
    return action[0] if single else action


BOARD_GAMES_VS = {"perfect": 50, "random": 100}
"""games a board-game agent plays against each opponent when evaluated (alphazero's `games`, `random_games`)"""


def baseline(spec: dict, env: Environment, split: str = "test", episodes: int | None = None
             ) -> tuple[str, dict[str, float]]:
    """A random policy on the same evaluation episodes as the agent's `evaluate` (the split's fixed seeds), with the
    same metrics: mean and std of the return, or for a board game its record against the perfect and the random
    player. The policy's own draws are seeded by the split, so the baseline is the same at every eval."""
    env = env if isinstance(env, Environment) else Environment(spec)
    if env.spec["kind"] == "board":
        return "random player", board_baseline(env, split, episodes)
    seeds = episode_seeds(split, episodes or EPISODES)
    return "random policy", summarize_returns(episode_returns(random_policy(env, len(seeds), seeds[0]), env, seeds))


def random_policy(env: Environment, n: int, seed: int):
    """act(obs (n, obs_dim)) -> n uniform actions drawn together from the action space (gymnasium's batched space:
    Discrete, or a Box, unbounded dimensions included), from a generator seeded by `seed`."""
    from gymnasium import spaces
    from gymnasium.vector.utils import batch_space
    action = env.spec["action"]
    single = (spaces.Discrete(action["n"]) if env.discrete else
              spaces.Box(np.float32(action["low"]), np.float32(action["high"]), dtype=np.float32))
    space = batch_space(single, n)
    space.seed(seed)
    return lambda obs: torch.as_tensor(space.sample())


def board_baseline(env: Environment, split: str, episodes: int | None) -> dict[str, float]:
    """The random player's record, from its side, in as many games as an agent plays against the perfect and the
    random player (the random player first in the even games; the opponent of game i draws from seed + i, as in
    the agent's evaluation)."""
    import random

    from deepatlas.data.boardgames import perfect_move, play_game, random_move
    game = env.make()
    base = VAL_SEED if split == "val" else TEST_SEED
    results = {}
    for name, opponent, seed in (("perfect", perfect_move, base), ("random", random_move, base + 100_000)):
        games = episodes or BOARD_GAMES_VS[name]
        mine, outcome = random.Random(seed - 1), []
        for i in range(games):  # games in turn: each is a few moves of a cached minimax, no batch to gain
            theirs = random.Random(seed + i)
            ours = lambda s: random_move(game, s, mine)
            them = lambda s, rng=theirs: opponent(game, s, rng)
            outcome.append(play_game(game, ours, them) if i % 2 == 0 else -play_game(game, them, ours))
        results[name] = outcome
    perfect, rand = results["perfect"], results["random"]
    return {"losses_vs_perfect": float(perfect.count(-1)), "draw_rate_vs_perfect": perfect.count(0) / len(perfect),
            "win_rate_vs_random": rand.count(1) / len(rand), "losses_vs_random": float(rand.count(-1))}
