"""Arithmetic expression trees (task "tree"): generated, parsed and encoded for recursive networks.

The embedded set "expressions" holds random expressions over the digits 0-9 with the operators
+ - *, like `(3+4)*2-7*(1-5)`. Every node is labelled with its value modulo 10: the leaves with
their digit, each operator with the value of its subtree, the root with the value of the whole
expression; this is the node-level supervision of Socher et al. 2013's sentiment treebank. Since
+ - * are compatible with "mod 10", a node's value is a function of its operator and its
children's values only, which is what a recursive network composes.

Shapes: every node of depth < max_height is an operator with probability 0.7 (the root always
is), so trees come in every shape, of height 1..max_height (4 by default: 1 to 15 operators, 7.6
on average, 92% of the trees of height 4). Expressions are deduplicated by their text before a
seeded shuffle cuts the fixed 20,000 / 2,000 / 2,000 train/val/test splits, so no expression is
in two splits. The most frequent root value is 0 (products of even numbers and 5s): always
answering 0 scores 0.20, the baseline to beat. "expressions-<H>" (H = 2..6) has max_height H.

Encoding (fixed-size tensors, so the default collate batches them). Nodes are listed in
pre-order, so the root is node 0 and a child's index is larger than its parent's:
    x (N_max, 4) long: token, left child, right child, height   (-1 for "none" and for padding)
        token: digit d -> d, operator k of "+-*" -> 10 + k; height: leaves 0, parent 1 + max(children)
    y (N_max,) long: class index of the node's label (-1 where unlabelled or padding)
N_max = 2^(H+1) - 1, the size of a full tree of height H.

Users' files: one `expression<TAB>label` per line (blank lines and lines starting with # are
skipped). Only the root is labelled; labels are any strings (the classes). `predict` takes an
expression or a file of one expression per line.
"""
from __future__ import annotations

import functools
import itertools
import random
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from deepatlas.data import Splits, split_indices
from deepatlas.errors import DeepAtlasError

DIGITS = "0123456789"
OPERATORS = "+-*"
PRECEDENCE = {"+": 1, "-": 1, "*": 2}
MODULUS = 10
FIELDS = ("token", "left", "right", "height")  # the columns of x
MAX_HEIGHT = 64  # deeper user expressions are refused (Python recursion)
OP_TOKEN = {op: len(DIGITS) + k for k, op in enumerate(OPERATORS)}

Tree = int | tuple  # a digit leaf, or (operator, left tree, right tree)

# name -> generator settings; "sizes" are the train/val/test splits
EMBEDDED = {"expressions": {"max_height": 4, "p_op": 0.7, "sizes": [20000, 2000, 2000], "seed": 0},
            **{f"expressions-{h}": {"max_height": h, "p_op": 0.7, "sizes": [20000, 2000, 2000], "seed": 0}
               for h in range(2, 7)}}


# ---- trees: evaluate, print, parse, generate ----------------------------------------------

def apply(op: str, a: int, b: int) -> int:
    return (a + b if op == "+" else a - b if op == "-" else a * b) % MODULUS


def evaluate(tree: Tree) -> int:
    """The expression's value modulo 10 (Python's %: always in 0..9)."""
    if isinstance(tree, int):
        return tree
    op, left, right = tree
    return apply(op, evaluate(left), evaluate(right))


def height(tree: Tree) -> int:
    return 0 if isinstance(tree, int) else 1 + max(height(tree[1]), height(tree[2]))


def to_string(tree: Tree, parent: str | None = None, right: bool = False) -> str:
    """Infix text with only the parentheses the tree needs; `parse(to_string(t)) == t`.

    A child is bracketed when it binds less tightly than its parent, or equally tightly on the
    right: operators associate to the left, so `1-(2+3)` keeps its brackets and `(1-2)+3` drops them.
    """
    if isinstance(tree, int):
        return str(tree)
    op, a, b = tree
    text = to_string(a, op) + op + to_string(b, op, right=True)
    if parent is not None and (PRECEDENCE[op] < PRECEDENCE[parent] or (right and PRECEDENCE[op] == PRECEDENCE[parent])):
        return f"({text})"
    return text


class _Parser:
    """Recursive descent: expr = term (("+"|"-") term)*,  term = factor ("*" factor)*,  factor = digit | "(" expr ")"."""

    def __init__(self, text: str, where: str):
        self.text, self.where = text, where
        self.chars = [(i, c) for i, c in enumerate(text) if not c.isspace()]
        self.pos = 0

    def fail(self, what: str):
        at = self.chars[self.pos][0] + 1 if self.pos < len(self.chars) else len(self.text) + 1
        raise DeepAtlasError(f"{self.where}: {what} at column {at} of {self.text.strip()!r}")

    def peek(self) -> str | None:
        return self.chars[self.pos][1] if self.pos < len(self.chars) else None

    def parse(self) -> Tree:
        if not self.chars:
            raise DeepAtlasError(f"{self.where}: empty expression")
        try:
            tree = self.expr()
            too_deep = height(tree) > MAX_HEIGHT
        except RecursionError:
            too_deep = True
        if too_deep:
            raise DeepAtlasError(f"{self.where}: expression nested deeper than {MAX_HEIGHT} operators")
        if self.pos < len(self.chars):
            self.fail(f"unexpected {self.peek()!r}")
        return tree

    def expr(self) -> Tree:
        tree = self.term()
        while self.peek() in ("+", "-"):
            op = self.peek()
            self.pos += 1
            tree = (op, tree, self.term())
        return tree

    def term(self) -> Tree:
        tree = self.factor()
        while self.peek() == "*":
            self.pos += 1
            tree = ("*", tree, self.factor())
        return tree

    def factor(self) -> Tree:
        c = self.peek()
        if c is not None and c in DIGITS:
            self.pos += 1
            if self.peek() is not None and self.peek() in DIGITS:
                self.fail("numbers must be single digits 0-9")
            return int(c)
        if c == "(":
            self.pos += 1
            tree = self.expr()
            if self.peek() != ")":
                self.fail("expected ')'")
            self.pos += 1
            return tree
        self.fail("expected a digit or '('" if c is None or c in OPERATORS + ")" else f"unexpected {c!r} (use digits, + - * and brackets)")


def parse(text: str, where: str = "input") -> Tree:
    """Parse infix `text` (single digits, + - *, brackets; * binds tighter; left-associative)."""
    return _Parser(text, where).parse()


def random_tree(rng: random.Random, max_height: int, p_op: float, depth: int = 0) -> Tree:
    """The root is an operator; a node at depth < max_height is an operator with probability p_op."""
    if depth == max_height or (depth > 0 and rng.random() >= p_op):
        return int(rng.random() * MODULUS)
    return (OPERATORS[int(rng.random() * len(OPERATORS))],
            random_tree(rng, max_height, p_op, depth + 1), random_tree(rng, max_height, p_op, depth + 1))


def generate(n: int, max_height: int, p_op: float, seed: int) -> list[Tree]:
    """`n` distinct random trees (distinct as text), in a seeded random order."""
    rng = random.Random(seed)
    seen, trees = set(), []
    while len(trees) < n:
        tree = random_tree(rng, max_height, p_op)
        text = to_string(tree)
        if text not in seen:
            seen.add(text)
            trees.append(tree)
    rng.shuffle(trees)  # small trees come early (before they run out): spread them over the splits
    return trees


# ---- tensors ------------------------------------------------------------------------------

def max_nodes(max_height: int) -> int:
    return 2 ** (max_height + 1) - 1


def _flatten(tree: Tree, rows: list, start: int) -> tuple[int, int, int]:
    """Append the tree's nodes in pre-order as [token, left, right, height, value], child indices counted
    from `start` (the root's row); returns (index, height, value) of `tree`."""
    i = len(rows)
    rows.append(None)
    if isinstance(tree, int):
        rows[i] = (tree, -1, -1, 0, tree)
        return i - start, 0, tree
    op, a, b = tree
    left, h_left, v_left = _flatten(a, rows, start)
    right, h_right, v_right = _flatten(b, rows, start)
    h, v = 1 + max(h_left, h_right), apply(op, v_left, v_right)
    rows[i] = (OP_TOKEN[op], left, right, h, v)
    return i - start, h, v


def encode(trees: list[Tree], n_max: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n, N_max, 4) [token, left, right, height] and y (n, N_max) every node's value, -1 padded."""
    rows: list = []
    sizes = []
    for tree in trees:
        start = len(rows)
        _flatten(tree, rows, start)
        sizes.append(len(rows) - start)
    n_max = n_max or max(sizes)
    sizes = np.array(sizes)
    tree_of = np.repeat(np.arange(len(trees)), sizes)                       # each node's tree
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # its index in its tree
    table = np.full((len(trees), n_max, 5), -1, dtype=np.int64)
    table[tree_of, slot] = np.array(rows, dtype=np.int64).reshape(-1, 5)
    table = torch.from_numpy(table)
    return table[..., :4].contiguous(), table[..., 4].contiguous()


def decode(x: torch.Tensor) -> Tree:
    """The tree of one encoded example x (N_max, 4) (the inverse of `encode`, for tests and debugging)."""
    token, left, right = x[:, 0].tolist(), x[:, 1].tolist(), x[:, 2].tolist()

    def build(i: int) -> Tree:
        if left[i] < 0:
            return token[i]
        return (OPERATORS[token[i] - len(DIGITS)], build(left[i]), build(right[i]))
    return build(0)


# ---- datasets -----------------------------------------------------------------------------

class TreeData(Splits):
    @property
    def dims(self) -> dict[str, int]:
        return {"n_leaves": len(DIGITS), "n_ops": len(OPERATORS), "n_classes": len(self.spec["classes"])}


@functools.lru_cache(maxsize=2)  # train, then evaluate on val and test, generate it once per process
def _embedded_tensors(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    settings = EMBEDDED[name]
    trees = generate(sum(settings["sizes"]), settings["max_height"], settings["p_op"], settings["seed"])
    return encode(trees, max_nodes(settings["max_height"]))


def _embedded(name: str) -> TreeData:
    settings = EMBEDDED[name]
    n_train, n_val, n_test = settings["sizes"]
    x, y = _embedded_tensors(name)
    cuts = np.cumsum([0, n_train, n_val, n_test])
    train, val, test = (TensorDataset(x[a:b], y[a:b]) for a, b in itertools.pairwise(cuts))
    spec = {"source": name, **settings, "max_nodes": max_nodes(settings["max_height"]), "fields": list(FIELDS),
            "vocab": list(DIGITS + OPERATORS), "modulus": MODULUS, "labels": "every node",
            "classes": [str(v) for v in range(MODULUS)]}
    return TreeData(train, val, test, spec)


def read_file(path: str | Path, labelled: bool) -> tuple[list[Tree], list[str], list[str]]:
    """(trees, their text, labels) from a file of `expression<TAB>label` lines (or bare expressions)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DeepAtlasError(f"{path}: cannot read ({err.__class__.__name__}: {err})".splitlines()[0]) from None
    trees, texts, labels = [], [], []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        expression, *rest = line.split("\t")
        if labelled:
            if len(rest) != 1 or not rest[0].strip():
                raise DeepAtlasError(f"{where}: expected 'expression<TAB>label', got {line.strip()!r}")
            labels.append(rest[0].strip())
        trees.append(parse(expression, where))
        texts.append(expression.strip())
    if not trees:
        raise DeepAtlasError(f"{path}: no expressions in the file")
    return trees, texts, labels


def _root_labels(trees: list[Tree], labels: list[str], classes: list[str], path) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode user trees with only the root labelled (class index), every other node -1."""
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise DeepAtlasError(f"{path}: label {unknown[0]!r} is not one of the model's classes {', '.join(classes)}")
    x, _ = encode(trees)
    y = torch.full(x.shape[:2], -1, dtype=torch.long)
    y[:, 0] = torch.tensor([classes.index(label) for label in labels])
    return x, y


def _users(path: str) -> TreeData:
    trees, _, labels = read_file(path, labelled=True)
    if len(trees) < 10:
        raise DeepAtlasError(f"{path}: need at least 10 labelled expressions to split into train/val/test")
    numeric = all(label.lstrip("-").isdigit() for label in labels)
    classes = sorted(set(labels), key=int if numeric else None)
    x, y = _root_labels(trees, labels, classes, path)
    parts = split_indices(y[:, 0].numpy())
    train, val, test = (TensorDataset(x[torch.from_numpy(i)], y[torch.from_numpy(i)]) for i in parts)
    spec = {"source": str(path), "fields": list(FIELDS), "vocab": list(DIGITS + OPERATORS),
            "max_nodes": x.shape[1], "labels": "root", "classes": classes}
    return TreeData(train, val, test, spec)


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # e.g. a long expression is no valid file name
        return False


def load(source: str) -> TreeData:
    if source in EMBEDDED:
        return _embedded(source)
    if _is_file(source):
        return _users(source)
    raise DeepAtlasError(f"unknown dataset {source!r}: not a file of 'expression<TAB>label' lines, "
                         f"nor one of {', '.join(EMBEDDED)}")


def load_for(options, target: str | None = None) -> TreeData:
    if target is not None:
        raise DeepAtlasError("--target: expression files have no columns; the label follows a tab on each line")
    return load(options.data)


def read_labeled(spec: dict, path: str) -> TensorDataset:
    """A user's file of `expression<TAB>label` lines, to evaluate on every line (root labels)."""
    trees, _, labels = read_file(path, labelled=True)
    return TensorDataset(*_root_labels(trees, labels, spec["classes"], path))


def read_inputs(spec: dict, path: str) -> tuple[torch.Tensor, list[str]]:
    """A file of one expression per line (anything after a tab is ignored): (x, the expressions)."""
    trees, texts, _ = read_file(path, labelled=False)
    return encode(trees)[0], texts


def predict(objective, spec: dict, text: str) -> list[dict]:
    """Evaluate the expression `text`, or each line of the file `text`, with the trained network.

    Each row: {"input", "predicted" (the root's class), "probability"} and, for models trained on
    the embedded expressions, "exact": the true value modulo 10, to compare with.
    """
    if _is_file(text):
        trees, texts, _ = read_file(text, labelled=False)
    else:
        trees, texts = [parse(text)], [text.strip()]
    x, _ = encode(trees)
    probs = objective.predict(x)                                 # (B, K) at the roots
    best, index = probs.max(-1)
    rows = []
    for tree, source, p, k in zip(trees, texts, best.tolist(), index.tolist()):
        row = {"input": source, "predicted": spec["classes"][k], "probability": round(p, 4)}
        if spec.get("modulus") == MODULUS:
            row["exact"] = str(evaluate(tree))
        rows.append(row)
    return rows
