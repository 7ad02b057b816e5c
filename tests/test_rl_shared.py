"""What the rl and evolution families share: environments and their errors, GAE, the replay buffer, the board
game and its perfect player, evaluation by seeded episodes, and the engine's loop context (validation keeps the
best weights, checkpoints resume). Plus REINFORCE, the smallest method on top of them."""
import json
import random

import pytest
import torch

import deepatlas
from deepatlas.data import boardgames, envs
from deepatlas.errors import DeepAtlasError
from deepatlas.tasks.rl import ActorCritic, ReplayBuffer, gae

# ---- environments ----------------------------------------------------------------------------------------------

def test_environment_specs_and_dims():
    cartpole = envs.Environment(envs.describe("CartPole-v1"))
    assert cartpole.dims == {"obs_dim": 4, "n_actions": 2, "action_dim": 0} and cartpole.discrete
    pendulum = envs.Environment(envs.describe("Pendulum-v1"))
    assert pendulum.dims == {"obs_dim": 3, "n_actions": 0, "action_dim": 1}
    assert pendulum.spec["action"]["low"] == [-2.0] and pendulum.spec["action"]["high"] == [2.0]
    game = envs.Environment(envs.describe("tictactoe"))
    assert game.dims == {"obs_dim": 18, "n_actions": 9, "action_dim": 0}


@pytest.mark.parametrize("env_id, message", [("CartPol-v1", "did you mean CartPole-v1"),
                                             ("Pendulum-v0", "did you mean Pendulum-v1"),
                                             ("Blackjack-v1", r"only Box \(vector\) observations")])
def test_bad_environment_ids_get_one_line(env_id, message):
    with pytest.raises(DeepAtlasError, match=message) as err:
        envs.describe(env_id)
    assert "\n" not in str(err.value)


def test_incompatible_action_space_is_refused():
    with pytest.raises(DeepAtlasError, match="needs discrete actions, but Pendulum-v1 has continuous"):
        envs.Environment(envs.describe("Pendulum-v1")).require(("discrete",), "dqn")


def test_episode_returns_are_seeded_and_count_only_the_first_episode():
    env = envs.Environment(envs.describe("CartPole-v1"))
    always_left = lambda obs: torch.zeros(len(obs), dtype=torch.long)  # falls within ~10 steps
    first = envs.episode_returns(always_left, env, [1, 2, 3])
    assert torch.equal(first, envs.episode_returns(always_left, env, [1, 2, 3]))
    assert (first > 5).all() and (first < 20).all()  # an ended copy restarts, but its next rewards do not count
    rng = torch.Generator().manual_seed(0)
    random_policy = lambda obs: torch.randint(2, (len(obs),), generator=rng)
    assert 10 < envs.episode_returns(random_policy, env, envs.episode_seeds("val")).mean() < 40  # random: ~22
    assert envs.episode_seeds("val") != envs.episode_seeds("test") and len(envs.episode_seeds("test")) == 20


# ---- GAE and returns ---------------------------------------------------------------------------------------------

def test_gae_equals_a_hand_computed_example():
    """T = 3 steps, one environment, gamma 0.9, lambda 0.8, terminated at the last step:
    deltas 1 + .9(.4) - .5 = .86, 1 + .9(.3) - .4 = .87, 1 - .3 = .7;
    A2 = .7, A1 = .87 + .72(.7) = 1.374, A0 = .86 + .72(1.374) = 1.84928."""
    col = lambda *v: torch.tensor(v)[:, None]  # (T, 1)
    adv, ret = gae(col(1.0, 1.0, 1.0), col(0.5, 0.4, 0.3), col(0.4, 0.3, 0.2), col(0, 0, 1), col(0, 0, 1), 0.9, 0.8)
    assert adv.squeeze(1).tolist() == pytest.approx([1.84928, 1.374, 0.7])
    assert ret.squeeze(1).tolist() == pytest.approx([1.84928 + 0.5, 1.374 + 0.4, 0.7 + 0.3])


def test_gae_bootstraps_a_truncation_and_stops_at_episode_ends():
    col = lambda *v: torch.tensor(v)[:, None]
    # step 0 is truncated (ended, not terminated): its delta bootstraps V(final obs) = 2, and A0 does not reach step 1
    adv, _ = gae(col(1.0, 5.0), col(0.0, 0.0), col(2.0, 0.0), col(0, 1), col(1, 1), 0.5, 1.0)
    assert adv.squeeze(1).tolist() == pytest.approx([1 + 0.5 * 2, 5.0])


def test_gae_with_lambda_one_and_no_values_is_the_discounted_return():
    rewards = torch.rand(6, 3)
    zeros, ended = torch.zeros(6, 3), torch.zeros(6, 3)
    ended[-1] = 1
    adv, _ = gae(rewards, zeros, zeros, ended, ended, 0.9, 1.0)
    expected = torch.stack([(rewards[t:] * 0.9 ** torch.arange(6 - t)[:, None]).sum(0) for t in range(6)])
    assert torch.allclose(adv, expected, atol=1e-6)


# ---- replay buffer ----------------------------------------------------------------------------------------------

def test_replay_buffer_keeps_the_newest_and_samples_uniformly():
    buffer = ReplayBuffer(capacity=10, obs_dim=1)
    for start in range(0, 25, 5):  # 25 transitions in batches of 5 into 10 slots: 15..24 remain
        ids = torch.arange(start, start + 5).float()
        buffer.add(ids[:, None], ids.long(), ids, ids[:, None] + 1, torch.zeros(5))
    assert len(buffer) == 10 and sorted(buffer.reward.tolist()) == list(range(15, 25))
    batch = buffer.sample(100_000, torch.Generator().manual_seed(0))
    assert torch.equal(batch["next_obs"][:, 0], batch["reward"] + 1)  # fields of one transition stay together
    counts = torch.bincount(batch["action"] - 15, minlength=10).float()
    chi2 = ((counts - 10_000) ** 2 / 10_000).sum()
    assert chi2 < 27.9  # 9 degrees of freedom, p = 0.001


# ---- the board game and its perfect player ----------------------------------------------------------------------

def test_tictactoe_rules():
    game = boardgames.TicTacToe()
    s = game.initial()
    for move in (0, 3, 1, 4):
        s = game.play(s, move)
    assert game.winner(s) is None and game.to_move(s) == 1
    assert game.winner(game.play(s, 2)) == 1 and game.legal(game.play(s, 2)) == []
    assert game.encode(s).shape == (2, 3, 3) and game.encode(s)[0].sum() == 2
    with pytest.raises(ValueError):
        game.play(s, 0)
    draw = (1, -1, 1, 1, -1, -1, -1, 1, 1)
    assert game.winner(draw) == 0


def _never_loses(game, s, perfect_side: int) -> bool:
    """Exhaustive: every opponent reply, every optimal move of the perfect player."""
    w = game.winner(s)
    if w is not None:
        return w != -perfect_side
    if game.to_move(s) == perfect_side:
        values = boardgames.move_values(game, s)
        best = max(values.values())
        return all(_never_loses(game, game.play(s, m), perfect_side) for m, v in values.items() if v == best)
    return all(_never_loses(game, game.play(s, m), perfect_side) for m in game.legal(s))


def test_minimax_player_never_loses_to_exhaustive_play():
    game = boardgames.TicTacToe()
    assert _never_loses(game, game.initial(), 1) and _never_loses(game, game.initial(), -1)
    assert boardgames.move_values(game, game.initial()) == {m: 0 for m in range(9)}  # perfect play draws
    rng = random.Random(0)
    perfect = lambda s: boardgames.perfect_move(game, s, rng)
    rand = lambda s: boardgames.random_move(game, s, rng)
    assert boardgames.match(game, perfect, perfect, 20) == {"wins": 0.0, "draws": 20.0, "losses": 0.0}
    against_random = boardgames.match(game, perfect, rand, 100)
    assert against_random["losses"] == 0 and against_random["wins"] > 70


# ---- networks -----------------------------------------------------------------------------------------------------

def test_actor_critic_distributions():
    discrete = ActorCritic(4, n_actions=3)
    obs = torch.randn(5, 4)
    assert discrete.distribution(obs).sample().shape == (5,) and discrete.value(obs).shape == (5,)
    assert torch.allclose(discrete.distribution(obs).probs, torch.full((5, 3), 1 / 3), atol=0.02)  # small last layer
    continuous = ActorCritic(3, action_dim=2)
    dist = continuous.distribution(torch.randn(5, 3))
    assert dist.sample().shape == (5, 2) and dist.log_prob(dist.sample()).shape == (5,)
    with pytest.raises(ValueError):
        ActorCritic(3, n_actions=2, action_dim=2)


# ---- the engine's loop context and REINFORCE ----------------------------------------------------------------------

def test_reinforce_learns_cartpole_well_above_random(tmp_path):
    """A random policy scores ~22 on CartPole; 25 updates of REINFORCE lift the best validated policy well above."""
    result = deepatlas.train("reinforce", out=tmp_path / "run", overrides={"updates": "25", "validate_every": "5"})
    assert result["test"]["mean_return"] > 60
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"] == result["test"]
    rows = (tmp_path / "run" / "log.csv").read_text()
    assert "val/mean_return" in rows and "train/policy_loss" in rows
    assert (tmp_path / "run" / "curves.png").exists()


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    deepatlas.train("reinforce", out=tmp_path / "run", overrides={"updates": "4", "validate_every": "2"})
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["model"]["updates"] = 8  # as if the first run had been stopped at update 4 of 8
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    with (tmp_path / "run" / "log.csv").open("a") as log:  # and had logged two updates after its last checkpoint
        log.write("5,0,train/loss,1.0\n6,0,train/loss,1.0\n")
    result = deepatlas.train(resume=tmp_path / "run")
    assert result["steps"] == 8  # continued from update 4, not from 0
    rows = [line.split(",") for line in (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows if r[2] == "train/loss"] == list(range(1, 9))  # each update logged once


def test_cli_eval_episodes_predict_and_render(tmp_path, cli_run):
    deepatlas.train("reinforce", out=tmp_path / "run", overrides={"updates": "2", "validate_every": "1"})
    code, out, _ = cli_run("eval", tmp_path / "run", "--episodes", "3", "--json")
    metrics = json.loads(out)
    assert code == 0 and set(metrics) == {"mean_return", "std_return", "baseline"}
    assert metrics["baseline"]["baseline"] == "random policy" and 5 < metrics["baseline"]["mean_return"] < 60
    code, out, _ = cli_run("predict", tmp_path / "run", "--json")
    assert code == 0 and json.loads(out)[0]["input"] == "CartPole-v1"
    gif = tmp_path / "episode.gif"
    code, _, _ = cli_run("predict", tmp_path / "run", "--render", gif)
    assert code == 0 and gif.read_bytes()[:6] == b"GIF89a"
    code, _, err = cli_run("predict", tmp_path / "run", "some.png")
    assert code == 2 and "takes no input" in err
    code, _, err = cli_run("train", "reinforce", "--env", "CartPol-v1")
    assert code == 2 and "did you mean CartPole-v1" in err
