"""Environments for the rl and evolution families (task "rl"): gymnasium ids and the project's board games.

The "data" of a reinforcement-learning run is an environment, named by `--data` (or `--env`): any gymnasium
id (`CartPole-v1`, `Acrobot-v1`, `Pendulum-v1`, `MountainCar-v0` are the embedded defaults, shipped inside
gymnasium) or a board game written here (`tictactoe`, see data/boardgames.py). What plays the role of the
fixed train/val/test split is a fixed set of episode seeds: training episodes are seeded from the run's seed,
validation episodes from VAL_SEED and test episodes from TEST_SEED, so `eval` scores every run on the same
20 test episodes.

    spec = {"env": id, "kind": "gym" | "board", "observation_shape": [...],
            "action": {"kind": "discrete", "n": A} | {"kind": "continuous", "dim": D, "low": [...], "high": [...]}}
    dims = {"obs_dim": prod(observation_shape), "n_actions": A or 0, "action_dim": D or 0}
"""
from __future__ import annotations

import difflib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from deepatlas.errors import DeepAtlasError

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
            raise DeepAtlasError(f"--data {self.id}: {name} needs {' or '.join(kinds)} actions, "
                                 f"but {self.id} has {kind} actions")


def load_for(options, target: str | None = None) -> Environment:
    if target is not None:
        raise DeepAtlasError("--target: an environment has no target column")
    return Environment(describe(options.data))


def describe(env_id: str) -> dict:
    """The spec of an environment id, or a one-line error (unknown id, unsupported space)."""
    if env_id in BOARD_GAMES:
        from deepatlas.data import boardgames
        game = boardgames.GAMES[env_id]
        return {"env": env_id, "kind": "board", "observation_shape": list(game.observation_shape),
                "action": {"kind": "discrete", "n": game.n_actions}}
    if Path(env_id).exists():
        raise DeepAtlasError(f"--data {env_id}: reinforcement learning takes an environment id "
                             f"(a gymnasium id such as CartPole-v1, or {', '.join(BOARD_GAMES)}), not a file")
    import gymnasium as gym
    from gymnasium import spaces
    try:
        with warnings.catch_warnings():  # gymnasium's own deprecation notes; our error below says it in one line
            warnings.simplefilter("ignore")
            env = gym.make(env_id)
    except gym.error.Error as err:
        known = [*gym.registry, *BOARD_GAMES]
        close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DeepAtlasError(f"--data {env_id}: not a gymnasium environment ({str(err).splitlines()[0]}){hint}") from None
    except ImportError as err:  # e.g. Box2D or MuJoCo environments without their extra installed
        raise DeepAtlasError(f"--data {env_id}: needs a package that is not installed ({err})") from None
    obs, act = env.observation_space, env.action_space
    env.close()
    if not isinstance(obs, spaces.Box):
        raise DeepAtlasError(f"--data {env_id}: observations are {type(obs).__name__}; only Box (vector) "
                             "observations are supported")
    if isinstance(act, spaces.Discrete):
        action = {"kind": "discrete", "n": int(act.n)}
    elif isinstance(act, spaces.Box) and len(act.shape) == 1:
        action = {"kind": "continuous", "dim": int(act.shape[0]), "low": act.low.tolist(), "high": act.high.tolist()}
    else:
        raise DeepAtlasError(f"--data {env_id}: action space {act} is neither Discrete nor a 1-D Box")
    return {"env": env_id, "kind": "gym", "observation_shape": list(obs.shape), "action": action}


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
    if env.spec["kind"] == "board":
        if render is not None:
            raise DeepAtlasError(f"--out: {env.id} games are shown as text, not drawn")
        return objective.show_game(env)
    if render is not None:
        played = render_episode(objective.act, env, render)
    else:
        played = {"return": episode_returns(objective.act, env, [TEST_SEED]).item()}
    return [{"input": env.id, "predicted": f"return {played['return']:.1f}", **played}]
