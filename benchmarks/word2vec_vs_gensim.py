"""Speed: deepatlas's skip-gram word2vec against gensim's Word2Vec, words per second of training.

Both train on the same corpus (planted-semantics' training sentences by default, repeated `--repeat`
times; `--data stdlib-text` for a vocabulary of ~11k words, where ours gathers rows per pair) with
the same vector size, window, negatives, subsampling threshold and epochs; gensim with one worker
thread (its Cython loop, one pair at a time, as word2vec.c), ours with one torch thread unless
--threads says otherwise: the objective's training_step and the optimizer step of the default recipe
(AdamW) over batches of `--batch` sentences. Words/s counts the corpus's raw words times epochs over
the training wall time (vocabulary building excluded on both sides), as gensim reports it. The two
alternate `--rounds` times, so load from elsewhere on the machine hits both alike; the median is
reported, with the ratio ours / gensim (goal >= 0.5), and each side's purity@5 and analogy accuracy
on the test queries, to show both learned.

    .venv/bin/python benchmarks/word2vec_vs_gensim.py [--dim D] [--window W] [--negatives K] [--sample T]
        [--data planted-semantics] [--epochs 3] [--repeat 1] [--batch B] [--rounds 3] [--threads 1] [--json out.json]
(defaults: word2vec's default config and recipe batch size).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import deepatlas
from deepatlas import catalog
from deepatlas.data import words
from deepatlas.engine.loop import lr_factor


def our_run(data, sentences, args) -> tuple[float, object]:
    """Seconds to train ours for args.epochs over the rows, and the trained objective."""
    entry = catalog.get("word2vec")
    torch.manual_seed(0)
    model = deepatlas.create_model("word2vec", vocab_size=data.dims["vocab_size"], dim=args.dim,
                                   context=args.window, negatives=args.negatives, sample=args.sample)
    objective = entry.objective(model).train()
    objective.prepare(data)
    rows = data.train.tensors[0].repeat(args.repeat, 1)
    recipe = entry.train
    optimizer = torch.optim.AdamW(objective.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = -(-len(rows) // args.batch)
    total, step = args.epochs * steps_per_epoch, 0
    start = time.perf_counter()
    for _ in range(args.epochs):
        order = torch.randperm(len(rows))
        for i in range(0, len(rows), args.batch):
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * lr_factor(recipe, step, total)
            loss, _ = objective.training_step([rows[order[i:i + args.batch]]])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return time.perf_counter() - start, objective


def gensim_run(sentences, args) -> tuple[float, object]:
    from gensim.models import Word2Vec
    model = Word2Vec(vector_size=args.dim, window=args.window, min_count=1, sg=1, hs=0, negative=args.negatives,
                     sample=args.sample, workers=1, seed=1)
    model.build_vocab(sentences)
    start = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), epochs=args.epochs)
    return time.perf_counter() - start, model


def quality(vectors: torch.Tensor, data) -> dict[str, float]:
    """purity@5 and analogy on the test queries, for any (V, D) vectors in the data's vocabulary order."""
    from deepatlas.tasks.embedding import EmbeddingObjective

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cfg = argparse.Namespace(vocab_size=len(vectors))

        def vectors(self):
            return vectors

    objective = EmbeddingObjective(Fixed())
    objective.prepare(data)
    logs = objective.validation_step(data.test.tensors)
    return {k: round(logs[k].item(), 3) for k in ("purity@5", "analogy")}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = catalog.get("word2vec").config()                            # our default config, for both
    parser.add_argument("--dim", type=int, default=defaults.dim, help="vector size D")
    parser.add_argument("--window", type=int, default=defaults.context)
    parser.add_argument("--negatives", type=int, default=defaults.negatives)
    parser.add_argument("--sample", type=float, default=defaults.sample)
    parser.add_argument("--data", default="planted-semantics", help="corpus: planted-semantics, stdlib-text or .txt")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=1, help="copies of the training sentences in the corpus")
    parser.add_argument("--batch", type=int, default=0, help="our sentences per step (0: the recipe's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for ours (gensim: one worker)")
    parser.add_argument("--json", help="write the result to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.batch = args.batch or catalog.get("word2vec").train.batch_size
    data = words.load(args.data)
    vocab = data.spec["vocab"]
    sentences = [[vocab[i] for i in row if i != words.PAD] for row in data.train.tensors[0].tolist()] * args.repeat
    n_words = sum(map(len, sentences)) * args.epochs
    times = {"ours": [], "gensim": []}
    for _ in range(args.rounds):
        seconds, objective = our_run(data, sentences, args)
        times["ours"].append(seconds)
        seconds, peer = gensim_run(sentences, args)
        times["gensim"].append(seconds)
    ours_wps, gensim_wps = (n_words / statistics.median(times[k]) for k in ("ours", "gensim"))
    peer_vectors = torch.zeros(len(vocab), args.dim)
    for i, w in enumerate(vocab[words.N_SPECIALS:], start=words.N_SPECIALS):
        peer_vectors[i] = torch.from_numpy(peer.wv[w].copy())
    result = {"words": n_words, "dim": args.dim, "window": args.window, "negatives": args.negatives,
              "sample": args.sample, "epochs": args.epochs, "batch": args.batch, "threads": torch.get_num_threads(),
              "ours_words_per_s": round(ours_wps), "gensim_words_per_s": round(gensim_wps),
              "ratio": round(ours_wps / gensim_wps, 3),
              "ours_quality": quality(objective.model.vectors().detach(), data) if "category" in data.spec else {},
              "gensim_quality": quality(peer_vectors, data) if "category" in data.spec else {}}
    print(f"skip-gram on {args.data}, vocabulary {len(vocab):,}, {n_words:,} words ({args.epochs} epochs), D={args.dim} window={args.window} "
          f"negatives={args.negatives} sample={args.sample:g}; ours: batch {args.batch}, {result['threads']} thread(s); "
          f"gensim: 1 worker")
    print(f"ours   {ours_wps:12,.0f} words/s   test {result['ours_quality']}")
    print(f"gensim {gensim_wps:12,.0f} words/s   test {result['gensim_quality']}")
    print(f"ratio ours / gensim: {result['ratio']:.2f}x (goal >= 0.5x)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
