"""Language modelling: the next-token objective and its yardstick.

A language model maps token ids x (B, T) to logits (B, T, V) for the next token at every position and
is trained to minimize the cross-entropy -ln p(y_t | x_≤t) (nats per token, padding ignored). Every
text batch also carries a bigram model's -ln p(y_t | x_t) for the same tokens (data/text.py), so each
evaluation reports the model against that baseline on exactly the same held-out tokens:

    ce_vs_bigram = CE_model / CE_bigram,   perplexity = exp(CE),   perplexity_vs_bigram = exp(CE_model - CE_bigram)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from deepatlas.data.text import PAD
from deepatlas.errors import DeepAtlasError, option
from deepatlas.tasks import Objective, Task
from deepatlas.tasks.predictions import ClassProbabilities, Continuations, Prediction


def token_means(name: str, nll: Tensor, real: Tensor) -> dict[str, Tensor]:
    """{name: mean of nll over the real tokens, name#n: their count}, so evaluation weighs by tokens."""
    n = real.sum()
    return {name: (nll * real).sum() / n.clamp(min=1), f"{name}#n": n}


def with_ratios(means: dict[str, float]) -> dict[str, float]:
    """Add perplexity and the ratios to the bigram to mean cross-entropies (nats per token)."""
    ce, bigram = means["cross_entropy"], means["bigram_cross_entropy"]
    return {**means, "ce_vs_bigram": ce / bigram, "perplexity": math.exp(min(ce, 50.0)),
            "bigram_perplexity": math.exp(min(bigram, 50.0)), "perplexity_vs_bigram": math.exp(min(ce - bigram, 50.0))}


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: int = 0) -> Tensor:
    """One token per row from next-token logits (B, V) -> (B, 1): softmax(logits / temperature), among the
    top_k likeliest only when top_k > 0; temperature <= 0 takes the argmax (greedy)."""
    if temperature <= 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, -1).values[:, -1:]                        # (B, 1) the k-th largest logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1)


class NextToken(Objective):
    """Next-token cross-entropy for a model x (B, T) -> logits (B, T, V); batches are (x, y, baseline)."""

    metric = "ce_vs_bigram"
    export_note = "next-token logits at every position (generation samples from them one token at a time)"

    def measure(self, batch) -> dict[str, Tensor]:
        x, y, baseline = batch
        logits = self.model(x)                                             # (B, T, V)
        real = y != PAD
        nll = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y)  # (B, T)
        logs = token_means("cross_entropy", nll, real)
        return {"loss": logs["cross_entropy"], **logs, **token_means("bigram_cross_entropy", baseline, real)}

    def summarize(self, means: dict[str, float]) -> dict[str, float]:
        return with_ratios(means)


class TextTask(Task):
    """Text: a topic run classifies sentences, a language model continues a prompt (`length`, `temperature`,
    `top_k`, `seed`: data/text.py's `predict`)."""

    def predict(self, objective, spec: dict, inputs, out=None, render=None, **options) -> Prediction:
        given = [k for k, v in options.items() if v is not None]
        if "classes" in spec and given:  # the generation options would be silently ignored by a classifier
            raise DeepAtlasError(f"{option(given[0])}: a topic run classifies sentences; "
                                 "it takes no generation options")
        rows = super().predict(objective, spec, inputs, out, render, **options).rows
        return ClassProbabilities(rows) if "classes" in spec else Continuations(rows)

    def generate(self, objective, spec: dict, prompt: str, **options) -> str:
        if "classes" in spec:
            return super().generate(objective, spec, prompt)
        return self.predict(objective, spec, prompt, **options).rows[0]["predicted"]


TASKS = [TextTask("language_model", "deepatlas.data.text", options=("window", "tokens", "vocab"))]
