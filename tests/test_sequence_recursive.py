"""Recursive neural network ("recursive_nn") and its expression trees: the data is what it claims
(values agree with Python's eval, splits are disjoint and fixed), the network composes bottom-up
one tree level at a time and gives the same result batched as tree by tree, and it learns."""
import random
import re

import pytest
import torch

import deepatlas
from deepatlas.data import trees
from deepatlas.errors import DeepAtlasError
from deepatlas.models.sequence.recursive_nn import Config, RecursiveNN, TreeObjective

SHAPES = ["7", "3-5", "(3-5)*2", "9-(2+3*4)", "1+2+3+4+5", "1-(2-(3-(4-(5-6))))", "(1*2-3)*(4+5*(6-7))-8"]


def random_trees(n, seed=0, max_height=5, p_op=0.6):
    rng = random.Random(seed)
    return [trees.random_tree(rng, max_height, p_op) for _ in range(n)]


def model(composition="rntn", width=8, seed=0):
    torch.manual_seed(seed)
    return RecursiveNN(Config(width=width, composition=composition)).eval()


# ---- the data -----------------------------------------------------------------------------

def test_evaluation_and_printing_agree_with_python():
    for tree in random_trees(500):
        text = trees.to_string(tree)
        assert trees.evaluate(tree) == eval(text) % 10, text
        assert trees.parse(text) == tree, text  # the printed text parses back to the same tree
    assert trees.parse("(3+4)*2") == ("*", ("+", 3, 4), 2)
    assert trees.parse(" 8 - 3 - 2 ") == ("-", ("-", 8, 3), 2)   # left-associative
    assert trees.parse("1+2*3") == ("+", 1, ("*", 2, 3))        # * binds tighter
    assert trees.to_string(("-", 8, ("-", 3, 2))) == "8-(3-2)"
    assert trees.evaluate(trees.parse("2-9")) == 3              # modulo 10, never negative


def test_encoding_lists_nodes_in_preorder_with_heights_and_every_nodes_value():
    sample = random_trees(200, seed=1)
    x, y = trees.encode(sample, trees.max_nodes(5))
    assert x.shape == (200, 63, 4) and y.shape == (200, 63)
    for tree, xi, yi in zip(sample, x, y):
        assert trees.decode(xi) == tree
        assert yi[0] == trees.evaluate(tree)                               # the root holds the expression's value
        token, left, right, height = xi.T
        real = height >= 0
        assert (xi[~real] == -1).all() and (yi[~real] == -1).all()         # padding
        leaves, ops = (real & (left < 0)).nonzero().squeeze(1), (left >= 0).nonzero().squeeze(1)
        assert len(leaves) == len(ops) + 1 and (height[leaves] == 0).all() and (yi[leaves] == token[leaves]).all()
        assert (left[ops] == ops + 1).all() and (right[ops] > left[ops]).all()  # pre-order: children after parents
        assert (height[ops] == 1 + torch.maximum(height[left[ops]], height[right[ops]])).all()
        expected = [trees.apply(trees.OPERATORS[token[i] - 10], yi[left[i]].item(), yi[right[i]].item())
                    for i in ops.tolist()]
        assert yi[ops].tolist() == expected                                # each operator: its subtree's value


def test_embedded_expressions_have_fixed_disjoint_splits_and_a_weak_majority_class():
    data = trees.load("expressions")
    assert [len(s) for s in (data.train, data.val, data.test)] == data.spec["sizes"] == [20000, 2000, 2000]
    assert data.dims == {"n_leaves": 10, "n_ops": 3, "n_classes": 10}
    texts = [{trees.to_string(trees.decode(x)) for x, _ in split} for split in (data.train, data.val, data.test)]
    assert [len(t) for t in texts] == [20000, 2000, 2000]  # no duplicate inside a split ...
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])  # ... nor across splits
    roots = data.test.tensors[1][:, 0]
    assert roots.bincount(minlength=10).max() / len(roots) < 0.22  # majority class (0) ≈ 0.20
    heights = data.test.tensors[0][:, 0, 3]
    assert heights.max() == 4 and (heights == 4).float().mean() > 0.8


def test_generation_is_deterministic():
    a = trees.generate(300, 4, 0.7, seed=0)
    assert a == trees.generate(300, 4, 0.7, seed=0)
    assert a != trees.generate(300, 4, 0.7, seed=1)
    x1, y1 = trees.load("expressions-3").test.tensors
    trees._embedded_tensors.cache_clear()
    x2, y2 = trees.load("expressions-3").test.tensors
    assert x1 is not x2 and torch.equal(x1, x2) and torch.equal(y1, y2)


@pytest.mark.parametrize("line,message", [
    ("3+4", "expected 'expression<TAB>label'"),
    ("3+(4\t7", "expected ')'"),
    ("3+x\t1", "unexpected 'x'"),
    ("12+3\t5", "single digits"),
    ("3+\t3", "expected a digit or '('"),
    ("(3+4))\t7", "unexpected ')'"),
    ("\t3", "empty expression"),
])
def test_bad_lines_get_one_line_errors_naming_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.tsv"
    path.write_text(f"# expression, tab, value\n1+1\t2\n{line}\n")
    with pytest.raises(DeepAtlasError, match=re.escape(message)) as err:
        trees.read_labeled(trees.load("expressions-2").spec, str(path))
    assert f"{path}:3:" in str(err.value) and "\n" not in str(err.value)


def test_users_files_and_other_bad_inputs(tmp_path):
    spec = trees.load("expressions-2").spec
    good = tmp_path / "good.tsv"
    good.write_text("(3+4)*2\t4\n9-9\t0\n")
    _, y = trees.read_labeled(spec, str(good)).tensors
    assert y[:, 0].tolist() == [4, 0] and (y[:, 1:] == -1).all()  # users' files label the root only
    wrong = tmp_path / "wrong.tsv"
    wrong.write_text("3+4\tseven\n")
    with pytest.raises(DeepAtlasError, match="not one of the model's classes"):
        trees.read_labeled(spec, str(wrong))
    parity = tmp_path / "parity.tsv"  # any labels: here the parity of the value
    parity.write_text("".join(f"{t}\t{['even', 'odd'][trees.evaluate(tree) % 2]}\n"
                              for tree in random_trees(40, seed=3) for t in [trees.to_string(tree)]))
    data = trees.load(str(parity))
    assert data.spec["classes"] == ["even", "odd"] and data.dims["n_classes"] == 2
    assert sum(len(s) for s in (data.train, data.val, data.test)) == 40
    with pytest.raises(DeepAtlasError, match="unknown dataset"):
        trees.load("expressions-99")
    with pytest.raises(DeepAtlasError, match="nested deeper"):
        trees.parse("1" + "+1" * 100)


# ---- the network --------------------------------------------------------------------------

def reference_root(net: RecursiveNN, tree) -> torch.Tensor:
    """The papers' recursion written plainly, one node at a time, from the network's weights."""
    if isinstance(tree, int):
        return net.leaf.weight[tree]
    op, a, b = tree
    o = trees.OPERATORS.index(op)
    c = torch.cat([reference_root(net, a), reference_root(net, b)])       # (2d,)
    z = net.W[o] @ c + net.b[o]
    if net.V is not None:
        z = z + torch.stack([c @ net.V[o, k] @ c for k in range(net.cfg.width)])
    return torch.tanh(z)


@pytest.mark.parametrize("composition", ["rnn", "rntn"])
def test_batched_by_level_equals_one_tree_at_a_time_and_the_plain_recursion(composition):
    net = model(composition)
    shapes = [trees.parse(s) for s in SHAPES]
    x, _ = trees.encode(shapes, 40)                                        # padded to 40 nodes
    with torch.no_grad():
        batched = net.encode(x)[:, 0]                                      # (B, d) root vectors
        logits = net(x)
        for i, tree in enumerate(shapes):
            alone = trees.encode([tree])[0]                                # (1, n_i, 4): no padding at all
            torch.testing.assert_close(net.encode(alone)[0, 0], batched[i], atol=1e-6, rtol=0)
            torch.testing.assert_close(net(alone)[0], logits[i], atol=1e-6, rtol=0)
            torch.testing.assert_close(reference_root(net, tree), batched[i], atol=1e-5, rtol=0)


def test_one_composition_call_per_tree_level():
    net = model()
    calls = []
    compose = net.compose
    net.compose = lambda c, op: calls.append(len(c)) or compose(c, op)
    x, _ = trees.encode([trees.parse(s) for s in SHAPES])
    net(x)
    assert len(calls) == 5  # the tallest tree has height 5: 5 calls for 26 operators in 7 trees
    assert sum(calls) == sum(s.count("+") + s.count("-") + s.count("*") for s in SHAPES)


def test_children_order_matters_and_trees_in_a_batch_do_not_interact():
    net = model()
    x, _ = trees.encode([trees.parse("(3-5)*2"), trees.parse("(5-3)*2")])
    with torch.no_grad():
        roots = net(x)
        assert not torch.allclose(roots[0], roots[1], atol=1e-4)  # swapping the children of - changes the root
        batch, _ = trees.encode([trees.parse(s) for s in SHAPES], 40)
        before = net(batch)
        changed = batch.clone()
        changed[3] = trees.encode([trees.parse("((1+2)*(3+4))-((5+6)*(7+8))")], 40)[0][0]
        after = net(changed)
    assert not torch.allclose(before[3], after[3])
    keep = [i for i in range(len(SHAPES)) if i != 3]
    torch.testing.assert_close(after[keep], before[keep], atol=1e-6, rtol=0)  # up to float rounding


def test_rntn_is_the_rnn_plus_the_tensor_term():
    rntn, rnn = model("rntn"), model("rnn")
    rnn.load_state_dict({k: v for k, v in rntn.state_dict().items() if k != "V"})
    x, _ = trees.encode([trees.parse(s) for s in SHAPES])
    with torch.no_grad():
        assert not torch.allclose(rntn(x), rnn(x), atol=1e-3)
        rntn.V.zero_()
        torch.testing.assert_close(rntn(x), rnn(x))


def test_objective_measures_roots_and_labelled_nodes():
    net = model()
    x, y = trees.encode([trees.parse(s) for s in SHAPES])
    objective = TreeObjective(net)
    logs = objective.validation_step((x, y))
    right = net.node_logits(x).argmax(-1) == y
    assert logs["accuracy"] == right[:, 0].float().mean()
    assert logs["node_accuracy"] == right[y >= 0].float().mean()
    assert torch.allclose(objective.predict(x).sum(-1), torch.ones(len(SHAPES)))


# ---- learning -----------------------------------------------------------------------------

def test_recursive_nn_learns_to_evaluate_expressions(tmp_path):
    result = deepatlas.train("recursive_nn", out=tmp_path / "run", overrides={"epochs": "1"})
    assert result["test"]["accuracy"] > 0.20 + 0.50  # majority class: 0.20
    run = result["run_dir"]
    answer = deepatlas.predict(run, "(3+4)*2-7*(1-5)")                  # 14 - (-28) = 42 -> 2 (mod 10)
    assert answer.names == ["(3+4)*2-7*(1-5)"] and answer.details[0]["exact"] == "2"
    lines = tmp_path / "exprs.txt"
    sample = random_trees(100, seed=7, max_height=4)
    lines.write_text("\n".join(trees.to_string(t) for t in sample) + "\n")
    rows = trees.predict(deepatlas.load(run).objective, trees.load("expressions").spec, str(lines))
    assert sum(r["predicted"] == r["exact"] for r in rows) >= 70
    labelled = tmp_path / "labelled.tsv"
    labelled.write_text("".join(f"{trees.to_string(t)}\t{trees.evaluate(t)}\n" for t in sample))
    assert deepatlas.evaluate(run, data=str(labelled))["accuracy"] > 0.7
