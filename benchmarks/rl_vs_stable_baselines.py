"""Speed to solve CartPole-v1: deepatlas's PPO and DQN against Stable-Baselines3's, with matched settings.

Both sides train with the rl-baselines3-zoo's CartPole-v1 hyper-parameters (ours are the entries' default
configs, which follow the zoo; SB3 gets the same values below), evaluate the deterministic policy on 20
episodes every `eval_every` environment steps (ours: the entry's `validate_every`, SB3: an EvalCallback at the
same interval), and stop at the first evaluation with a mean return >= 475. Reported per seed: environment
steps and wall seconds (evaluations included on both sides) to that point, then the medians and the ratios
ours / SB3 (goal: seconds ratio <= 1, ours no slower). A run that never reaches 475 within its step budget
(the zoo's: 1e5 for PPO, 5e4 for DQN) is reported as not solved. Seeds alternate between the two libraries so
load from elsewhere on the machine hits both alike.

    pip install -e '.[peers]'
    .venv/bin/python benchmarks/rl_vs_stable_baselines.py [--algos ppo dqn] [--seeds 0 1 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import deepatlas
from deepatlas import catalog

TARGET = 475.0
EPISODES = 20


def ours(algo: str, seed: int) -> dict:
    """One run of our entry, stopped at the first validation >= 475."""
    with tempfile.TemporaryDirectory() as tmp:
        result = deepatlas.train(algo, seed=seed, out=tmp, overrides={"stop_at": str(TARGET)})
    solved = result["val"].get("mean_return", float("-inf")) >= TARGET
    # the loop's own seconds (validations included); the test and val scoring after training is not counted
    return {"steps": result["steps"], "seconds": result["seconds"], "solved": solved}


def sb3(algo: str, seed: int) -> dict:
    """One run of Stable-Baselines3 with the zoo's CartPole-v1 settings, stopped at the first evaluation >= 475."""
    from stable_baselines3 import DQN, PPO
    from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
    from stable_baselines3.common.env_util import make_vec_env

    cfg = catalog.get(algo).config()
    linear = lambda start: (lambda progress: progress * start)  # SB3 passes the remaining fraction
    if algo == "ppo":
        env = make_vec_env("CartPole-v1", n_envs=cfg.envs, seed=seed)
        model = PPO("MlpPolicy", env, n_steps=cfg.steps, batch_size=cfg.envs * cfg.steps // cfg.minibatches,
                    gae_lambda=cfg.gae_lambda, gamma=cfg.gamma, n_epochs=cfg.update_epochs, ent_coef=cfg.entropy_coef,
                    learning_rate=linear(catalog.get(algo).train.lr), clip_range=linear(cfg.clip), seed=seed,
                    device="cpu", verbose=0)
        budget, n_envs = cfg.total_steps, cfg.envs
        eval_every = cfg.validate_every * cfg.envs * cfg.steps
    else:
        env = make_vec_env("CartPole-v1", n_envs=1, seed=seed)
        model = DQN("MlpPolicy", env, learning_rate=catalog.get(algo).train.lr, batch_size=catalog.get(algo).train.batch_size,
                    buffer_size=cfg.buffer_size, learning_starts=cfg.learning_starts, gamma=cfg.gamma,
                    target_update_interval=cfg.target_update, train_freq=cfg.train_freq,
                    gradient_steps=cfg.gradient_steps, exploration_fraction=cfg.eps_fraction,
                    exploration_final_eps=cfg.eps_end, policy_kwargs={"net_arch": [cfg.hidden] * cfg.layers},
                    seed=seed, device="cpu", verbose=0)
        budget, n_envs, eval_every = cfg.total_steps, 1, cfg.validate_every
    stop = StopTrainingOnRewardThreshold(TARGET, verbose=0)
    evaluate = EvalCallback(make_vec_env("CartPole-v1", n_envs=1, seed=seed + 10_000), callback_on_new_best=stop,
                            n_eval_episodes=EPISODES, eval_freq=max(eval_every // n_envs, 1), deterministic=True,
                            verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=budget, callback=evaluate)
    seconds = time.perf_counter() - start
    return {"steps": int(model.num_timesteps), "seconds": seconds, "solved": bool(evaluate.best_mean_reward >= TARGET)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=["ppo", "dqn"], choices=["ppo", "dqn"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--json", help="write the per-seed results and ratios here")
    args = parser.parse_args()
    report = {}
    for algo in args.algos:
        rows = []
        for seed in args.seeds:
            a, b = ours(algo, seed), sb3(algo, seed)
            rows.append({"seed": seed, "ours": a, "sb3": b})
            print(f"{algo} seed {seed}: ours {a['steps']:>7} steps {a['seconds']:7.1f} s solved={a['solved']}   "
                  f"sb3 {b['steps']:>7} steps {b['seconds']:7.1f} s solved={b['solved']}", flush=True)
        median = {side: {k: statistics.median(r[side][k] for r in rows) for k in ("steps", "seconds")}
                  for side in ("ours", "sb3")}
        ratios = {k: median["ours"][k] / median["sb3"][k] for k in ("steps", "seconds")}
        report[algo] = {"runs": rows, "median": median, "ratio": ratios}
        print(f"{algo}: median ours {median['ours']['steps']:.0f} steps {median['ours']['seconds']:.1f} s, "
              f"sb3 {median['sb3']['steps']:.0f} steps {median['sb3']['seconds']:.1f} s -> ratio ours/sb3: "
              f"steps {ratios['steps']:.2f}, seconds {ratios['seconds']:.2f} (goal <= 1)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
