"""Recursive neural networks (RNN / RNTN): vectors composed bottom-up along a tree.

R. Socher, C. C.-Y. Lin, A. Y. Ng, C. D. Manning, 2011. "Parsing Natural Scenes and Natural
Language with Recursive Neural Networks." ICML 2011. R. Socher, A. Perelygin, J. Wu, J. Chuang,
C. D. Manning, A. Y. Ng, C. Potts, 2013. "Recursive Deep Models for Semantic Compositionality Over
a Sentiment Treebank." EMNLP 2013.

Each leaf is a learned vector; each parent is computed from its two children by a composition
function shared across the tree, from the leaves up to the root, so a whole tree of any shape becomes one
vector of width d, and every node's vector is its subtree's meaning. A softmax classifier reads
any node (Socher et al. 2013 label every node of their treebank and train on all of them):

    RNN  (2011):  p = tanh(W [c_l; c_r] + b)
    RNTN (2013):  p = tanh([c_l; c_r]^T V^[1:d] [c_l; c_r] + W [c_l; c_r] + b)
    y_node = softmax(W_s p)

The tensor V (d slices of 2d x 2d) lets the children's coordinates multiply each other, which a
weighted sum cannot: with it one layer can hold a table "value of c_l, value of c_r -> value of p".

Here the internal nodes are operators (+ - *) and the leaves digits; the operator enters as in
the syntactically untied SU-RNN (Socher et al. 2013, "Parsing with Compositional Vector
Grammars", ACL): each operator o has its own W_o, b_o (and V_o), chosen by the node's token.

Batching by level: a node's height is 1 + its children's largest. All nodes of height t, across
every tree of the batch, have children already computed, so they are composed together in one
call, for t = 1, 2, ..., H: H calls per batch (each one matrix product per operator), however
many trees and nodes it holds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.catalog import Bar, Data, Entry, Paper, Relation, Size, Train, register
from deepatlas.tasks import Objective


@dataclass
class Config:
    n_leaves: Size = 10
    """leaf tokens: the digits (set from the data)"""
    n_ops: Size = 3
    """operators, each with its own composition weights (set from the data)"""
    n_classes: Size = 10
    """classes of a node's label (set from the data)"""
    width: Size = 24
    """d: the size of every node's vector"""
    composition: Literal["rnn", "rntn"] = "rntn"
    """rnn: p = tanh(W c + b) (2011); rntn: adds the tensor term c^T V c (2013)"""
    node_loss: bool = True
    """train on every labelled node (Socher et al. 2013's treebank); false: on the roots only"""


class RecursiveNN(nn.Module):
    """x (B, N, 4) long [token, left, right, height] per node (pre-order: root at 0; -1 = none)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        d, n_ops = cfg.width, cfg.n_ops
        self.leaf = nn.Embedding(cfg.n_leaves, d)                           # the leaves' vectors
        bound = 1 / math.sqrt(2 * d)
        self.W = nn.Parameter(torch.empty(n_ops, d, 2 * d).uniform_(-bound, bound))   # W_o: 2d -> d
        self.b = nn.Parameter(torch.zeros(n_ops, d))
        # V_o[k] is the k-th 2d x 2d slice of operator o's tensor
        self.V = nn.Parameter(torch.empty(n_ops, d, 2 * d, 2 * d).uniform_(-bound, bound) / math.sqrt(2 * d)) \
            if cfg.composition == "rntn" else None
        self.classifier = nn.Linear(d, cfg.n_classes)                        # W_s on any node

    def compose(self, c: Tensor, op: Tensor) -> Tensor:
        """Parents of M nodes at once: c (M, 2d) = [c_l; c_r], op (M,) operator index -> p (M, d)."""
        d = self.cfg.width
        p = c.new_empty(len(c), d)
        for o in range(self.cfg.n_ops):                                      # untied: each operator its own weights
            nodes = (op == o).nonzero().squeeze(1)
            co = c[nodes]                                                    # (M_o, 2d)
            z = co @ self.W[o].T + self.b[o]                                 # (M_o, d): W_o c + b_o
            if self.V is not None:
                cV = (co @ self.V[o].transpose(0, 1).flatten(1)).view(len(co), d, 2 * d)  # (M_o, d, 2d): c^T V_o[k]
                z = z + (cV @ co.unsqueeze(-1)).squeeze(-1)                  # (M_o, d): c^T V_o[k] c for every slice k
            p = p.index_copy(0, nodes, torch.tanh(z).to(p.dtype))          # (autocast may give z a lower precision)
        return p

    def encode(self, x: Tensor) -> Tensor:
        """Every node's vector (B, N, d), computed level by level; padding rows stay zero."""
        B, N, _ = x.shape
        token, left, right, level = x.reshape(B * N, 4).unbind(-1)           # each (B·N,)
        start = torch.arange(B, device=x.device).repeat_interleave(N) * N    # (B·N,): row of each node's root
        left, right = left + start, right + start                            # child rows in the flat batch
        h = torch.zeros(B * N, self.cfg.width, device=x.device, dtype=self.leaf.weight.dtype)
        leaves = (level == 0).nonzero().squeeze(1)
        h = h.index_copy(0, leaves, self.leaf(token[leaves]))
        for t in range(1, int(level.max()) + 1):                             # bottom-up, one call per height
            nodes = (level == t).nonzero().squeeze(1)                        # (M,) every node of height t
            c = torch.cat([h[left[nodes]], h[right[nodes]]], -1)             # (M, 2d): children, all of height < t
            h = h.index_copy(0, nodes, self.compose(c, token[nodes] - self.cfg.n_leaves).to(h.dtype))
        return h.view(B, N, -1)

    def node_logits(self, x: Tensor) -> Tensor:
        return self.classifier(self.encode(x))                              # (B, N, K)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.encode(x)[:, 0])                        # (B, K): the roots


class TreeObjective(Objective):
    """Cross-entropy on every labelled node (or the roots only); logs root "accuracy" and "node_accuracy"."""

    not_exported = "a pass per level of each input's own tree (its depth sets how many)"

    def measure(self, batch) -> dict[str, Tensor]:
        x, y = batch                                                         # (B, N, 4), (B, N)
        logits = self.model.node_logits(x)                                   # (B, N, K)
        labelled = y >= 0                                                    # (B, N): padding and unlabelled nodes are -1
        trained = labelled if self.model.cfg.node_loss else labelled & (torch.arange(y.shape[1], device=y.device) == 0)
        loss = F.cross_entropy(logits[trained], y[trained])
        right = logits.argmax(-1) == y                                       # (B, N)
        return {"loss": loss, "accuracy": right[:, 0].float().mean(),
                "node_accuracy": right[labelled].float().mean()}

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.model(x).softmax(-1)                                     # (B, K) at the roots


register(Entry(
    name="recursive_nn", title="Recursive neural network (RNN / RNTN)", family="sequence", year=2013,
    paper=Paper("R. Socher, A. Perelygin, J. Wu, J. Chuang, C. D. Manning, A. Y. Ng, C. Potts",
                "Recursive Deep Models for Semantic Compositionality Over a Sentiment Treebank",
                "EMNLP 2013 (and Socher et al., Parsing Natural Scenes and Natural Language with Recursive "
                "Neural Networks, ICML 2011)"),
    summary="Composes child vectors into parent vectors bottom-up along a given tree (a parse, an "
            "expression), with an optional tensor term that lets children multiply; a softmax labels every node.",
    when_to_use="Inputs that come with a tree (parse trees, expressions, programs, scene hierarchies) and "
                "labels that compose along it; when you want a label for every subtree, not only the whole.",
    when_not="Plain sequences or inputs without a reliable tree (use an LSTM, GRU or transformer); very large "
             "corpora, where tree batching is slower than sequence models.",
    relations=[
        Relation("builds_on", "rnn", "composes along a parse tree instead of a chain"),
        Relation("alternative_to", "lstm", "structure given by a tree rather than learned from a sequence read in "
                 "order"),
    ],
    config=Config, build=RecursiveNN, objective=TreeObjective,
    train=Train(epochs=8, batch_size=64, lr=1e-3),
    data=Data("expressions"),
    bar=Bar("accuracy", 0.90, "max", 120),
    task="tree",
    notes="On the embedded expressions (values mod 10) the RNTN reaches 1.00 root accuracy where the plain RNN "
          "stays at 0.25 (d=24) to 0.37 (d=64), barely above always answering 0 (0.20).",
))
