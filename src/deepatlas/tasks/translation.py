"""Translation: the objective every sequence-to-sequence network trains with, and its metrics.

Any encoder-decoder (the RNN seq2seq, the transformer) plugs in through two methods:
    forward(src (B, S), tgt_in (B, T)) -> logits (B, T, V)
        teacher forcing: tgt_in is BOS + the target shifted right, the logits predict the target
    decode(src (B, S), max_len, beam=1) -> (tokens (B, T'), attention (B, T', S) or None)
        free-running: each step reads the model's own previous output. T' <= max_len; tokens
        exclude BOS, end with EOS and are PAD after it; attention (when the model has it) is the
        weight each output token gave each source position.
and may carry an attribute `beam`, its default beam width for `predict`.

Training minimizes the cross-entropy of the next target token (padding ignored). Validation also
decodes greedily, with no teacher forcing, and counts a sequence right only if every token is.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.data.pairs import BOS, EOS, PAD, UNK  # noqa: F401  (re-exported for the models)
from deepatlas.tasks import Objective, Task, first_batch


class Translation(Objective):
    """Wraps a network with the contract above; logs {"loss", "token_accuracy"} (+ "exact_match" in validation)."""

    metric = "exact_match"
    export_note = "teacher-forced logits of each next target token (decoding feeds them back one token at a time)"

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0):
        super().__init__(model)
        self.label_smoothing = label_smoothing

    def export_inputs(self, data, n: int) -> dict[str, Tensor]:
        """Source ids (B, S) and the target read so far, BOS + target[:-1] (B, T), padded as the data pads them."""
        src, tgt = first_batch(data.test, n)
        return {"source": src, "target_in": tgt[:, :-1]}

    def _teacher_forced(self, src: Tensor, tgt: Tensor, smoothing: float) -> dict[str, Tensor]:
        tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]                 # (B, T-1): read BOS..c_n, predict c_1..EOS
        logits = self.model(src, tgt_in)                           # (B, T-1, V)
        loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD,
                               label_smoothing=smoothing)
        real = tgt_out != PAD
        correct = (logits.argmax(-1) == tgt_out) & real
        return {"loss": loss, "token_accuracy": correct.sum() / real.sum().clamp(min=1)}

    def training_step(self, batch) -> tuple[Tensor, dict[str, Tensor]]:
        src, tgt = trim(*batch)
        logs = self._teacher_forced(src, tgt, self.label_smoothing)
        return logs["loss"], {k: v.detach() for k, v in logs.items()}

    @torch.no_grad()
    def validation_step(self, batch) -> dict[str, Tensor]:
        src, tgt = trim(*batch)
        logs = self._teacher_forced(src, tgt, 0.0)  # the plain cross-entropy, smoothed or not in training
        tokens, _ = self.model.decode(src, max_len=tgt.shape[1] - 1, beam=1)
        logs["exact_match"] = exact_match(tokens, tgt[:, 1:]).float().mean()
        return logs

    @torch.no_grad()
    def predict(self, src: Tensor, max_len: int, beam: int | None = None) -> tuple[Tensor, Tensor | None]:
        """Decode `src` (B, S): (tokens (B, T'), attention (B, T', S) or None); beam defaults to the model's."""
        return self.model.decode(src, max_len=max_len, beam=beam or getattr(self.model, "beam", 1))


def trim(src: Tensor, tgt: Tensor) -> tuple[Tensor, Tensor]:
    """Drop the trailing columns that are padding in every row (rows are right-padded)."""
    s = int((src != PAD).sum(1).max())
    t = int((tgt != PAD).sum(1).max())
    return src[:, :s], tgt[:, :t]


def exact_match(tokens: Tensor, target: Tensor) -> Tensor:
    """(B,) bool: the decoded tokens (B, T') equal the target (B, T) up to and including EOS."""
    width = max(tokens.shape[1], target.shape[1])
    a = F.pad(tokens, (0, width - tokens.shape[1]), value=PAD)
    b = F.pad(target, (0, width - target.shape[1]), value=PAD)
    return (a == b).all(1)


TASKS = [Task("translation", "deepatlas.data.pairs")]
