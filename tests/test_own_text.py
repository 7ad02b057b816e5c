"""Users' text and environments, done right (issue 18): generation options checked and seeded, prompts that
condition the continuation, the trivial baselines `eval` prints (bigram, majority class, random policy), the
missing-extra message, and `act` for a loaded agent."""
import importlib.util
import random
from collections import Counter

import numpy as np
import pytest
import torch

import deepatlas
from deepatlas.data import envs, text
from deepatlas.errors import DeepAtlasError
from deepatlas.tasks import get_task
from deepatlas.tasks import rl
from deepatlas.tasks.language import NextToken, sample_next

KEYS = "a=1234\n", "b=5678\n"
"""two line kinds whose digits only the key two characters back tells: a model that reads just the last
character ("=") cannot continue "a=" and "b=" differently"""


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """Char-level data of 600 random KEYS lines, from a user's file."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("text") / "keys.txt"
    path.write_text("".join(rng.choice(KEYS) for _ in range(600)))
    return text.load(str(path), "char", 16)


def gpt_for(data, **overrides) -> NextToken:
    torch.manual_seed(0)
    cfg = {"vocab_size": data.vocab_size, "block_size": data.window, "dim": 32, "layers": 2, "heads": 2,
           "dropout": 0.0, **overrides}
    return NextToken(deepatlas.create_model("gpt", **cfg)).eval()


# ---- generation options ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    ({"length": 0}, "length= 0: give a number of tokens from 1 to 10,000"),
    ({"length": 10_001}, "length= 10001"), ({"length": 2.5}, "length= 2.5"),
    ({"temperature": -0.1}, "temperature= -0.1: give a number >= 0"), ({"temperature": float("nan")}, "temperature="),
    ({"temperature": float("inf")}, "temperature="), ({"top_k": -1}, "top_k= -1: give a whole number >= 0"),
    ({"seed": -1}, "seed= -1: give a whole number from 0 to 4294967295"), ({"seed": 2**32}, "seed=")])
def test_generation_options_out_of_range_get_one_line_naming_them(keyed, options, message):
    with pytest.raises(DeepAtlasError, match="^" + message.replace("+", r"\+").replace(".", r"\.")) as err:
        text.predict(gpt_for(keyed), keyed.spec, "a=", **options)
    assert "\n" not in str(err.value)


def test_same_seed_same_sample_other_seeds_other_samples_and_the_global_seed_untouched(keyed):
    objective = gpt_for(keyed)
    state = torch.get_rng_state()
    sample = lambda seed, prompt="a=": text.predict(objective, keyed.spec, prompt, length=30, temperature=1.0,
                                                    top_k=0, seed=seed)[0]["continuation"]
    assert sample(7) == sample(7)  # (the length is in tokens; an untrained model also draws specials, shown as "")
    assert len({sample(s) for s in range(5)}) == 5
    assert torch.equal(torch.get_rng_state(), state)  # a user's own random stream is not reset by predicting
    both = text.predict(objective, keyed.spec, ["b=", "a="], length=30, temperature=1.0, top_k=0, seed=7)
    assert [r["continuation"] for r in both] == [sample(7, "b="), sample(7)]  # a prompt's sample, wherever it stands
    greedy = text.predict(objective, keyed.spec, "a=", length=5, temperature=0)[0]["continuation"]
    assert all(text.predict(objective, keyed.spec, "a=", length=5, temperature=0, seed=s)[0]["continuation"] == greedy
               for s in (1, 2))


def test_topic_runs_refuse_generation_options():
    spec = text.load("planted-topics", "word", 0).spec
    with pytest.raises(DeepAtlasError, match="temperature=: a topic run classifies sentences"):
        get_task("language_model").predict(None, spec, "the cat eats", temperature=0.5)  # refused before the model


# ---- prompts condition the continuation ------------------------------------------------------------------------

def test_first_token_is_drawn_from_the_whole_prompts_distribution(keyed):
    """Untrained but with large weights, so that every position of the prompt moves the logits: the first token of
    predict's continuation follows p(. | the whole prompt), which differs between prompts ending alike."""
    objective = gpt_for(keyed)
    with torch.no_grad():
        for p in objective.parameters():
            p.normal_(0, 1.0)
    spec, n = keyed.spec, 400

    def exact(prompt: str) -> Counter:
        probs = objective(torch.tensor([text.encode(spec, prompt)]))[0, -1].softmax(-1)
        out = Counter()
        for i, p in enumerate(probs.tolist()):  # by the text a token shows as (specials show as "")
            out[text.decode(spec, [i])] += p
        return out

    def drawn(prompt: str) -> Counter:
        rows = [text.predict(objective, spec, prompt, length=1, temperature=1.0, top_k=0, seed=s)[0] for s in range(n)]
        return Counter({k: v / n for k, v in Counter(r["continuation"] for r in rows).items()})

    tv = lambda p, q: 0.5 * sum(abs(p[k] - q[k]) for k in set(p) | set(q))
    pa, pb = exact("1234\na="), exact("5678\nb=")
    assert tv(pa, pb) > 0.3                      # the prompts' distributions differ although both end in "="
    da, db = drawn("1234\na="), drawn("5678\nb=")
    assert tv(da, pa) < 0.12 and tv(db, pb) < 0.12  # sampling noise of 400 draws
    assert tv(da, pb) > 0.2 and tv(db, pa) > 0.2


def test_prompts_that_end_alike_are_not_coupled_by_the_seed(keyed):
    """The issue's symptom: a model that reads only the last token (like a GPT trained one epoch, near the bigram)
    continued "The library " and "You may " with the same text, because both were sampled with the same random
    draws. Each prompt now has its own draws: the continuations differ, each still reproducible by its seed."""

    class LastToken(torch.nn.Module):
        def __init__(self, vocab: int):
            super().__init__()
            self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0)))

        def generate(self, idx, steps, temperature=1.0, top_k=0):
            for _ in range(steps):
                idx = torch.cat([idx, sample_next(self.table[idx[:, -1]], temperature, top_k)], 1)
            return idx

    objective = NextToken(LastToken(keyed.vocab_size))
    a, b = (text.predict(objective, keyed.spec, p, length=40)[0]["continuation"] for p in ("1234\na=", "5678\nb="))
    assert a != b and a == text.predict(objective, keyed.spec, "1234\na=", length=40)[0]["continuation"]


def test_a_briefly_trained_gpt_continues_each_prompt_as_its_key_says(keyed):
    """Trained for a few seconds on the KEYS lines: "a=" and "b=" end alike, only the key tells the digits."""
    objective = gpt_for(keyed).train()
    x, y, _ = keyed.train.tensors
    optimizer = torch.optim.AdamW(objective.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(250):
        pick = torch.randint(len(x), (32,), generator=g)
        loss = objective.measure((x[pick], y[pick], torch.zeros(32, x.shape[1])))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    objective.eval()
    for key, digits in (("a=", "1234\n"), ("b=", "5678\n")):
        for prompt in (key, "5678\n" + key, "1234\n" + key):
            row = text.predict(objective, keyed.spec, prompt, length=5, temperature=0)[0]
            assert row["continuation"] == digits and row["predicted"] == prompt + digits, (prompt, row)


# ---- the text baselines ------------------------------------------------------------------------------------------

def test_language_model_baseline_is_the_bigram_the_metrics_compare_with(keyed):
    description, metrics = text.baseline(keyed.spec, keyed.train, keyed.test)
    assert description == "bigram fitted on the training split"
    x, y, nll = keyed.test.tensors
    logs = gpt_for(keyed).measure((x, y, nll))       # the same tokens the model is scored on
    assert metrics["cross_entropy"] == pytest.approx(logs["bigram_cross_entropy"].item(), rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(np.exp(metrics["cross_entropy"]))
    assert metrics["ce_vs_bigram"] == 1.0
    assert metrics["cross_entropy"] < 0.8  # the keys' digits are nearly determined by the previous character
    path = keyed.spec["source"]  # `eval --data FILE`: the file's windows carry a bigram fitted on that file
    description, _ = text.baseline(keyed.spec, keyed.train, text.read_labeled(keyed.spec, path))
    assert description == "bigram fitted on this text itself (in-sample)"


def test_topic_baseline_is_the_training_majority_class():
    data = text.load("planted-topics", "word", 0)
    description, metrics = text.baseline(data.spec, data.train, data.test)
    train_labels, test_labels = data.train.tensors[1], data.test.tensors[1]
    majority = Counter(train_labels.tolist()).most_common(1)[0][0]
    assert description == f"majority class of the training split ({data.spec['classes'][majority]})"
    assert metrics == {"accuracy": pytest.approx((test_labels == majority).float().mean().item())}
    assert 0 < metrics["accuracy"] < 0.5  # eight topics


# ---- environments: the missing extra, the random-policy baseline, act ------------------------------------------

BOX2D_MISSING = ("LunarLander-v3 needs Box2D, which is not installed; install it with: pip install swig, "
                 'then pip install "gymnasium[box2d]"')


@pytest.fixture
def without_box2d(monkeypatch):
    """This machine's state (gymnasium without Box2D); where Box2D is installed, gymnasium's refusal is imitated."""
    if importlib.util.find_spec("Box2D") is not None:
        import gymnasium

        def make(env_id, **kwargs):
            raise gymnasium.error.DependencyNotInstalled(
                'Box2D is not installed, you can install it by run `pip install swig` followed by '
                '`pip install "gymnasium[box2d]"`')
        monkeypatch.setattr(gymnasium, "make", make)


def test_a_missing_extra_says_what_to_install_without_a_did_you_mean(without_box2d, cli_run):
    with pytest.raises(DeepAtlasError) as err:
        envs.describe("LunarLander-v3")
    assert str(err.value) == BOX2D_MISSING
    code, out, stderr = cli_run("train", "ppo", "--env", "LunarLander-v3")
    assert code == 2 and stderr.count("\n") == 1 and BOX2D_MISSING in stderr
    assert "did you mean" not in stderr and "--data" not in stderr  # the user typed --env
    with pytest.raises(DeepAtlasError, match="^CartPol-v1: not a gymnasium environment .*did you mean CartPole-v1"):
        envs.describe("CartPol-v1")  # a misspelt id still gets its suggestions


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_random_policy_baseline_plays_the_agents_test_episodes(env_id, monkeypatch):
    env = envs.Environment(envs.describe(env_id))
    played = []

    def spy(act, env, seeds, device="cpu"):
        played.append(list(seeds))
        return episode_returns(act, env, seeds, device)

    episode_returns = envs.episode_returns
    monkeypatch.setattr(envs, "episode_returns", spy)
    monkeypatch.setattr(rl, "episode_returns", spy)
    torch.manual_seed(0)
    agent = deepatlas.create_model("ppo", **env.dims)
    metrics = agent.evaluate(env, "test")
    description, values = envs.baseline(env.spec, env, "test", None)
    assert played[0] == played[1] == envs.episode_seeds("test")      # the same 20 seeded episodes
    assert description == "random policy" and set(values) == set(metrics) == {"mean_return", "std_return"}
    assert envs.baseline(env.spec, env, "test", None)[1] == values   # the policy's own draws are seeded too
    low, high = {"CartPole-v1": (12, 35), "Pendulum-v1": (-1500, -900)}[env_id]  # random: about 22 and -1200
    assert low < values["mean_return"] < high
    assert envs.baseline(env.spec, env, "val", 5)[1] != values and played[-1] == envs.episode_seeds("val", 5)


def test_random_player_baseline_of_a_board_game_has_the_agents_metrics():
    env = envs.Environment(envs.describe("tictactoe"))
    description, values = envs.baseline(env.spec, env, "test", None)
    assert description == "random player"
    assert set(values) == {"losses_vs_perfect", "draw_rate_vs_perfect", "win_rate_vs_random", "losses_vs_random"}
    assert values["losses_vs_perfect"] >= 35 and values["draw_rate_vs_perfect"] < 0.3  # of 50 games: it never wins
    assert 0.25 < values["win_rate_vs_random"] < 0.6


@pytest.mark.parametrize("name, env_id", [("ppo", "CartPole-v1"), ("dqn", "CartPole-v1"), ("ppo", "Pendulum-v1"),
                                          ("mpc", "Pendulum-v1")])
def test_act_gives_a_valid_action_for_a_raw_observation(name, env_id):
    import gymnasium as gym
    env = envs.Environment(envs.describe(env_id))
    torch.manual_seed(0)
    small = {"horizon": 5, "candidates": 50, "iterations": 2} if name == "mpc" else {}  # a quick planner
    agent = deepatlas.create_model(name, **env.dims, **small)
    game = gym.make(env_id)
    obs, _ = game.reset(seed=0)
    for observation in (obs, obs.tolist()):  # numpy or a plain list
        action = envs.act(agent, env.spec, observation)
        assert game.action_space.contains(np.asarray(action, dtype=game.action_space.dtype))
        assert isinstance(action, int) if env.discrete else (action.shape == (1,) and action.dtype == np.float32)
    for _ in range(5):  # the action steps the real environment
        obs, *_ = game.step(envs.act(agent, env.spec, obs))
    batch = envs.act(agent, env.spec, np.stack([obs, obs, obs]))
    assert len(batch) == 3
    with pytest.raises(DeepAtlasError, match=rf"^{env_id}: an observation has shape"):
        envs.act(agent, env.spec, obs[:-1])


def test_act_keeps_a_gaussian_policys_mean_inside_the_box():
    env = envs.Environment(envs.describe("Pendulum-v1"))
    agent = deepatlas.create_model("ppo", **env.dims)
    with torch.no_grad():
        agent.model.policy[-1].bias.fill_(10.0)  # a mean far past the torque limit of 2
    assert envs.act(agent, env.spec, [1.0, 0.0, 0.0]).tolist() == [2.0]
