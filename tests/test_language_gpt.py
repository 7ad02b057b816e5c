"""GPT: causal masking, equality with Hugging Face's GPT-2 on copied weights, weight tying, sampling
with temperature and top-k, and learning to continue a sequence that only attention can predict."""
import pytest
import torch
import torch.nn.functional as F
from conftest import fit_steps

import deepatlas
from deepatlas.models.language.gpt import GPT


def small_gpt(**overrides) -> GPT:
    torch.manual_seed(0)
    cfg = {"vocab_size": 50, "block_size": 16, "dim": 32, "layers": 2, "heads": 4, "dropout": 0.0}
    return deepatlas.create_model("gpt", **{**cfg, **overrides}).eval()


def test_shapes_and_gpt2_init():
    model = small_gpt(layers=3)
    x = torch.randint(0, 50, (3, 16))
    assert model(x).shape == (3, 16, 50)
    assert model(x[:, :5]).shape == (3, 5, 50)            # shorter than the block is fine
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))
    big = small_gpt(dim=256, layers=8, vocab_size=500)
    assert big.blocks[0].mlp[0].weight.std().item() == pytest.approx(0.02, rel=0.05)
    for proj in (big.blocks[0].attn.proj.weight, big.blocks[-1].mlp[3].weight):  # residual writers: 0.02/sqrt(2L)
        assert proj.std().item() == pytest.approx(0.02 / 4, rel=0.05)


def test_causal_mask_future_tokens_do_not_change_earlier_logits():
    model = small_gpt()
    x = torch.randint(0, 50, (4, 16))
    changed = x.clone()
    changed[:, 9:] = torch.randint(0, 50, (4, 7))
    a, b = model(x), model(changed)
    assert (a[:, :9] - b[:, :9]).abs().max() < 1e-6         # positions 0..8 never see 9..15
    assert (a[:, 9:] - b[:, 9:]).abs().max() > 1e-3         # and the changed positions do change


def test_equals_huggingface_gpt2_with_copied_weights():
    from transformers import GPT2Config, GPT2LMHeadModel
    model = small_gpt()
    with torch.no_grad():  # weights far from the init, so every parameter matters to the logits
        for p in model.parameters():
            p.normal_(0, 0.3)
    peer = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                                      activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                                      attn_pdrop=0.0, layer_norm_epsilon=1e-5, bos_token_id=0, eos_token_id=0)).eval()
    # our names -> GPT-2's; its Conv1D layers keep (in, out) matrices, the transpose of nn.Linear's
    state = {"transformer.wte.weight": model.tok_embed.weight, "transformer.wpe.weight": model.pos_embed.weight,
             "transformer.ln_f.weight": model.norm.weight, "transformer.ln_f.bias": model.norm.bias,
             "lm_head.weight": model.head.weight}
    for i, b in enumerate(model.blocks):
        for ours, theirs in [(b.norm1, "ln_1"), (b.norm2, "ln_2")]:
            state |= {f"transformer.h.{i}.{theirs}.weight": ours.weight, f"transformer.h.{i}.{theirs}.bias": ours.bias}
        for ours, theirs in [(b.attn.qkv, "attn.c_attn"), (b.attn.proj, "attn.c_proj"), (b.mlp[0], "mlp.c_fc"),
                             (b.mlp[3], "mlp.c_proj")]:
            state |= {f"transformer.h.{i}.{theirs}.weight": ours.weight.T, f"transformer.h.{i}.{theirs}.bias": ours.bias}
    peer.load_state_dict({k: v.detach().clone() for k, v in state.items()})  # strict: every tensor has its twin
    x = torch.randint(0, 50, (3, 16))
    ours, theirs = model(x), peer(x).logits
    assert theirs.abs().max() > 1.0                          # not a trivially small comparison
    assert (ours - theirs).abs().max() < 1e-5


def test_weight_tying_is_one_tensor():
    model = small_gpt().train()
    assert model.head.weight is model.tok_embed.weight
    assert "head.weight" not in dict(model.named_parameters())  # counted and updated once
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randint(0, 50, (2, 16))
    F.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
    opt.step()
    assert model.head.weight.data_ptr() == model.tok_embed.weight.data_ptr()


def test_top_k_sampling_stays_in_the_top_k():
    model = small_gpt()
    torch.manual_seed(1)
    prompt = torch.randint(0, 50, (64, 4))
    out = model.generate(prompt, new_tokens=10, temperature=2.0, top_k=3)  # hot: without top-k it would wander
    assert out.shape == (64, 14) and torch.equal(out[:, :4], prompt)
    logits = model(out[:, :-1])                               # what the model saw before each new token
    top3 = logits[:, 3:].topk(3, -1).indices                  # (64, 10, 3)
    assert (out[:, 4:, None] == top3).any(-1).all()
    assert len(out[:, 4:].unique()) > 3                       # still random: not only the argmax
    torch.manual_seed(1)
    free = model.generate(prompt, new_tokens=10, temperature=2.0)
    assert not (free[:, 4:, None] == top3).any(-1).all()      # the same draws without top-k do leave it


def test_temperature_to_zero_is_greedy_argmax_and_context_is_cropped():
    model = small_gpt()
    prompt = torch.randint(0, 50, (8, 5))
    greedy = prompt
    for _ in range(20):  # past block_size 16: only the last 16 tokens are read
        greedy = torch.cat([greedy, model(greedy[:, -16:])[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(model.generate(prompt, 20, temperature=0.0), greedy)
    assert torch.equal(model.generate(prompt, 20, temperature=1e-4), greedy)
    assert torch.equal(model.generate(prompt, 20, temperature=1e-4, top_k=5), greedy)


def test_learns_to_copy_what_only_attention_can_see():
    """Rows are 8 random tokens said twice: the second half is predictable only by looking back 8 steps
    (chance: ln 16 = 2.77 nats). A model without working attention or positions stays near chance."""
    model = small_gpt(vocab_size=16).train()
    g = torch.Generator().manual_seed(0)

    def batch():
        half = torch.randint(0, 16, (32, 8), generator=g)
        return torch.cat([half, half], 1)                     # (32, 16)

    def loss_fn():
        x = batch()
        return F.cross_entropy(model(x[:, :-1])[:, 8:].flatten(0, 1), x[:, 9:].flatten())

    fit_steps(model, loss_fn, steps=250, lr=3e-3)
    model.eval()
    with torch.no_grad():
        assert loss_fn().item() < 0.3


def test_trains_on_text_and_continues_a_prompt(tmp_path, cli_run):
    run = tmp_path / "gpt"
    metrics = deepatlas.train("gpt", out=run, overrides={"dim": "32", "layers": "1", "heads": "2",
                                                           "window": "32", "steps": "8", "epochs": "1"})
    assert metrics["test"]["ce_vs_bigram"] > 0 and metrics["test"]["cross_entropy"] < 5.0
    code, out, err = cli_run("predict", run, "def ")
    assert code == 0, err
    assert "def " in out
