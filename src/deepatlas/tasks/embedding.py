"""Word embeddings: the objective word2vec, GloVe and fastText share, its metrics, and word2vec's sampling helpers.

A model plugs in with
    cfg.vocab_size                  V, the vocabulary size (set from the data)
    vectors() -> (V, D)             the word vectors that are evaluated (and listed by `predict`)
and optionally vector_of(word: str) -> (D,) for words outside the vocabulary (fastText).
A subclass of `EmbeddingObjective` writes its training loss in `measure(batch)` (batches of sentences,
data/words.py's rows of word ids, or whatever its `prepare` returns to train on).

Validation on data/words.py's query batches (kind (B,), ids (B, 4)) measures against the ground truth
stored in the `category` buffer:
    purity@5   the fraction of a query word's 5 nearest neighbours by cosine (among all words but the
               specials and itself) that share its category
    analogy    3CosAdd (Mikolov et al. 2013c): a : b :: c : ?  is answered by
               argmax_{w not in {a, b, c}} cos(x_w, x_b - x_a + x_c), right if it is d
each with "NAME#n", the number of queries of that kind in the batch, so batches weigh correctly. A batch
of sentences (held-out text without ground truth; or a training batch) gives the training loss, with the
random draws seeded the same at every call so values are comparable across epochs.

Shared helpers of word2vec (Mikolov et al. 2013, arXiv:1301.3781, arXiv:1310.4546) and fastText:
    negatives drawn from the unigram distribution raised to 3/4:  P_n(w) = c_w^0.75 / Σ_u c_u^0.75,
        through a table of ids in which each word fills a share P_n(w) of the slots, as in the release
    subsampling of frequent words, per token per epoch, with the keep probability of the released code
        (word2vec.c; gensim's too), where f_w = c_w / Σ c is the word's frequency and t the threshold:
        P_keep(w) = sqrt(t / f_w) + t / f_w   (clipped to 1; the paper writes the discard probability
        1 - sqrt(t / f_w), which the release replaced by this smoother form)
    (center, context) pairs within a window shrunk at random for each center to b ~ U{1..window}, so
        nearer words are sampled more often (word2vec.c draws `b = next_random % window` and spans window − b)
    the negative-sampling loss  −log σ(v'_o·v_c) − Σ_k log σ(−v'_k·v_c)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepatlas.data.words import ANALOGY, N_SPECIALS, PAD, PURITY
from deepatlas.tasks import Objective, Task, first_batch

TABLE_SIZE = 1_000_000  # slots of the negative-sampling table (word2vec.c: 1e8)
VALIDATION_SEED = 0


# ---- negative sampling -----------------------------------------------------------------------

def noise_distribution(counts: Tensor, power: float = 0.75) -> Tensor:
    """P_n(w) ∝ count_w^power over the words (V,); uniform over the non-special ids if no counts are known."""
    weights = counts.double().clamp(min=0) ** power
    if weights.sum() <= 0:  # before prepare(): no statistics yet
        weights = torch.ones_like(weights)
        weights[:N_SPECIALS] = 0
    return (weights / weights.sum()).float()


def unigram_table(counts: Tensor, size: int = TABLE_SIZE, power: float = 0.75) -> Tensor:
    """The release's sampling table (size,) of word ids (int32, half the memory traffic of int64): word w fills
    round(size·P_n(w)) consecutive slots."""
    edges = (noise_distribution(counts, power).double().cumsum(0) * size).round().long()  # (V,) end of each word's run
    runs = torch.diff(edges, prepend=edges.new_zeros(1))                                    # (V,) slots per word
    ids = torch.arange(len(counts), dtype=torch.int32, device=counts.device)
    return torch.repeat_interleave(ids, runs)


def draw(table: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Word ids (long) drawn from a sampling table: uniform slots, so each word with its table share."""
    slots = torch.randint(len(table), (int(torch.Size(shape).numel()),), device=table.device)
    return table.gather(0, slots).long().view(shape)


def negative_sampling_loss(v_in: Tensor, v_pos: Tensor, v_neg: Tensor, neg_mask: Tensor | None = None) -> Tensor:
    """−log σ(v'_o·v_c) − Σ_k log σ(−v'_k·v_c) for each pair: v_in (P, D) input vectors v_c, v_pos (P, D) the
    output vectors v'_o of the observed words, v_neg (P, k, D) those of the k noise words; neg_mask (P, k)
    drops a noise word (word2vec.c skips one that equals the observed word). Returns (P,)."""
    pos = (v_in * v_pos).sum(-1)                                             # (P,)
    neg = (v_neg * v_in[:, None]).sum(-1)                                    # (P, k, D) · (P, 1, D) -> (P, k)
    neg_terms = F.logsigmoid(-neg)
    if neg_mask is not None:
        neg_terms = neg_terms * neg_mask
    return -F.logsigmoid(pos) - neg_terms.sum(-1)


def counted_negative_sampling_loss(U: Tensor, W: Tensor, inputs: Tensor, observed: Tensor, noise: Tensor) -> Tensor:
    """The sum over pairs of negative_sampling_loss(U[inputs], W[observed], W[noise], noise != observed), from
    counts: with S = U W^T (V, V), the scores of every (input, output) word pair, and C+ (V, V) / C- (V, V)
    how often each pair occurs as an observed / a noise pair in the batch,
        Σ_pairs loss = Σ_ij C+_ij · (−log σ(S_ij)) + C-_ij · (−log σ(−S_ij))
    Same value and gradients, but one (V, D) x (D, V) product instead of gathering (P, k+1, D) rows: the
    fast way when V² is small next to P·(k+1). U, W (V, D); inputs, observed (P,); noise (P, k). Returns ()."""
    V = len(U)
    positive = torch.bincount(inputs * V + observed, minlength=V * V).view(V, V)              # C+
    codes = (inputs[:, None] * V + noise).masked_fill(noise == observed[:, None], V * V)       # (P, k); V²: skipped
    negative = torch.bincount(codes.view(-1), minlength=V * V + 1)[:-1].view(V, V)             # C-
    S = U @ W.T                                                                                 # (V, D) @ (D, V)
    return (positive * F.softplus(-S)).sum() + (negative * F.softplus(S)).sum()


# ---- subsampling of frequent words ---------------------------------------------------------------

def keep_probability(counts: Tensor, t: float) -> Tensor:
    """P_keep(w) = sqrt(t/f_w) + t/f_w clipped to [0, 1] (V,); 1 for unseen words and when t = 0 (off)."""
    f = counts.float() / counts.float().sum().clamp(min=1)
    if t <= 0:
        return torch.ones_like(f)
    ratio = t / f.clamp(min=1e-30)
    return torch.where(f > 0, (ratio.sqrt() + ratio).clamp(max=1.0), torch.ones_like(f))


def subsample(x: Tensor, keep: Tensor) -> Tensor:
    """Drop each token of x (B, L) with probability 1 − keep[token]; the kept words close ranks, in order,
    then PAD (as word2vec.c drops them before the window is laid, so windows reach further). (B, L)."""
    kept = (x != PAD) & (torch.rand(x.shape, device=x.device) < keep.take(x))  # (B, L)
    order = torch.argsort((~kept).to(torch.int8), dim=1, stable=True)         # kept positions first, in order
    return torch.where(kept, x, PAD).gather(1, order)


# ---- context windows -----------------------------------------------------------------------------

def context_windows(x: Tensor, window: int, shrink: bool = True) -> tuple[Tensor, Tensor]:
    """Each position's context: ids (B, L, 2W) of the words at offsets −W..−1, 1..W and a mask (B, L, 2W) of
    those inside the sentence, non-PAD, within |offset| ≤ b where b ~ U{1..W} per center if `shrink`
    (else b = W). Centers that are PAD have an all-False row."""
    B, L = x.shape
    W = window
    around = F.pad(x, (W, W), value=PAD).unfold(1, 2 * W + 1, 1)             # (B, L, 2W+1) views, center in the middle
    ctx = torch.cat([around[..., :W], around[..., W + 1:]], -1)                # (B, L, 2W)
    distance = torch.cat([torch.arange(W, 0, -1), torch.arange(1, W + 1)]).to(x.device, torch.int16)  # (2W,) |offset|
    if shrink:
        b = torch.randint(1, W + 1, (B, L, 1), device=x.device, dtype=torch.int16)  # the shrunk window of each center
    else:
        b = torch.full((B, L, 1), W, device=x.device, dtype=torch.int16)
    valid = (distance <= b) & (ctx != PAD) & (x != PAD)[:, :, None]
    return ctx, valid


def context_pairs(x: Tensor, window: int, shrink: bool = True) -> tuple[Tensor, Tensor]:
    """Every (center, context) pair of the sentences x (B, L) within the (shrunk) window: two (P,) id
    tensors; never PAD. Skip-gram trains on these."""
    ctx, valid = context_windows(x, window, shrink)                          # (B, L, 2W)
    slot = valid.view(-1).nonzero().squeeze(1)                                # (P,) flat (b, l, j) of each pair
    center = x.reshape(-1).index_select(0, torch.div(slot, 2 * window, rounding_mode="floor"))
    return center, ctx.reshape(-1).index_select(0, slot)


# ---- the objective --------------------------------------------------------------------------------

def is_query_batch(batch) -> bool:
    """data/words.py's ground-truth queries: (kind (B,), ids (B, 4))."""
    return (isinstance(batch, (list, tuple)) and len(batch) == 2 and batch[0].dim() == 1
            and batch[1].dim() == 2 and batch[1].shape[1] == 4)


class EmbeddingObjective(Objective):
    """Train counts and categories as buffers; purity@5 and analogy on query batches, the loss on sentences."""

    metric = "purity@5"
    export_note = "the word vectors of the ids (in-vocabulary words)"

    def __init__(self, model: nn.Module):
        super().__init__(model)
        V = model.cfg.vocab_size
        self.register_buffer("counts", torch.zeros(V))                        # training count of each word
        self.register_buffer("category", torch.full((V,), -1, dtype=torch.long))  # ground truth, -1: none
        self.register_buffer("table", torch.zeros(0, dtype=torch.long), persistent=False)  # rebuilt from counts

    def prepare(self, data):
        spec = data.spec
        self.counts.copy_(torch.tensor(spec["counts"], dtype=torch.float))
        self.category.copy_(torch.tensor(spec.get("category", [-1] * len(spec["vocab"])), dtype=torch.long))
        self.table = torch.zeros(0, dtype=torch.long, device=self.counts.device)

    def negatives(self, shape: tuple[int, ...]) -> Tensor:
        """Noise word ids of `shape` from the unigram^0.75 table (built from `counts` on first use)."""
        if self.table.numel() == 0 or self.table.device != self.counts.device:
            self.table = unigram_table(self.counts)
        return draw(self.table, shape)

    def keep(self, t: float) -> Tensor:
        """Subsampling keep probability of each word (V,) at threshold t."""
        return keep_probability(self.counts, t)

    def export_inputs(self, data, n: int) -> dict[str, Tensor]:
        """The word ids of the test split's first n queries (B, 4), or of its first n sentences (B, L)."""
        batch = first_batch(data.test, n)
        return {"ids": batch[1] if is_query_batch(batch) else batch[0]}

    def infer(self, ids: Tensor) -> Tensor:
        """The vectors (..., D) of word ids (...)."""
        return self.model.vectors()[ids]

    # -- evaluation --
    @torch.no_grad()
    def unit_vectors(self) -> Tensor:
        return F.normalize(self.model.vectors().float(), dim=-1)                 # (V, D)

    @torch.no_grad()
    def nearest(self, queries: Tensor, k: int, exclude: Tensor | None = None,
                W: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The k words nearest by cosine to each query vector (N, D), never a special nor an id in exclude
        (N, m): (cosines (N, k), ids (N, k)). W: the unit word vectors (V, D) if already at hand."""
        W = self.unit_vectors() if W is None else W
        sims = F.normalize(queries.float(), dim=-1) @ W.T                       # (N, D) @ (D, V) -> (N, V)
        sims[:, :N_SPECIALS] = float("-inf")
        if exclude is not None:
            sims.scatter_(1, exclude, float("-inf"))
        return sims.topk(min(k, sims.shape[1] - N_SPECIALS - (0 if exclude is None else exclude.shape[1])), dim=-1)

    @torch.no_grad()
    def query_metrics(self, kind: Tensor, ids: Tensor) -> dict[str, Tensor]:
        W = self.unit_vectors()                                                 # (V, D)
        logs = {"loss": torch.zeros((), device=W.device)}
        word = ids[kind == PURITY, 0]                                           # (Q,)
        if len(word):
            _, top = self.nearest(W[word], 5, word[:, None], W)                    # (Q, 5)
            logs["purity@5"] = (self.category[top] == self.category[word][:, None]).float().mean()
        else:
            logs["purity@5"] = torch.zeros((), device=W.device)
        logs["purity@5#n"] = torch.tensor(float(len(word)), device=W.device)
        a, b, c, d = ids[kind == ANALOGY].T                                     # (A,) each
        if len(a):
            _, top = self.nearest(W[b] - W[a] + W[c], 1, torch.stack([a, b, c], 1), W)  # 3CosAdd: (A, 1)
            logs["analogy"] = (top[:, 0] == d).float().mean()
        else:
            logs["analogy"] = torch.zeros((), device=W.device)
        logs["analogy#n"] = torch.tensor(float(len(a)), device=W.device)
        return logs

    @torch.no_grad()
    def validation_step(self, batch) -> dict[str, Tensor]:
        if is_query_batch(batch):
            return self.query_metrics(*batch)
        device = batch[0].device if isinstance(batch, (list, tuple)) else next(iter(batch.values())).device
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):  # same draws every call
            torch.manual_seed(VALIDATION_SEED)
            return {"loss": self.measure(batch)["loss"]}


TASKS = [Task("embedding", "deepatlas.data.words", options=("tokens", "vocab"))]
