"""Speed and memory: deepatlas's graph networks against PyTorch Geometric at identical configurations.

1. GCN, full-batch training epochs on planted partitions (data/graphs.py's sbm-N: 3,000 and 50,000 nodes): the
   gcn entry's GCN against two torch_geometric GCNConv layers of the same widths, the same dropout, the same
   weights (copied) and the same optimizer (AdamW, the recipe's lr and weight decay). An epoch is one forward
   pass over the whole graph, the loss on the training nodes, the backward pass and the optimizer step; neither
   side caches its normalization. Runs alternate ours / PyG; the median epoch is reported, with ours / PyG.
2. GraphSAGE on sbm-large (200,000 nodes, about 2,000,000 edges): sampled mini-batches per second (sampling,
   forward, backward, step) and the peak resident memory while training (each side in a fresh child process, its
   peak reset after building the graph: Linux's /proc/self/clear_refs; elsewhere the whole process's ru_maxrss).
   PyG's NeighborLoader needs pyg-lib or torch-sparse, which have no wheel for this torch (torch-sparse is a 2023
   source release on PyPI; pyg-lib is not on PyPI); when it cannot sample (the line printed says), PyG's side is
   SAGEConv layers on OUR sampler's mini-batches, used two ways: as NeighborLoader's output is used (every layer
   over every sampled node, the subgraph's edges those sampled for all layers), and as bipartite blocks (layer k
   from B^{k-1} to B^k only: the same computation as ours, so this ratio compares the layers alone). Every side
   computes the same function per layer: SAGEConv (root weight, mean), then ReLU, then L2 normalization.

    .venv/bin/python benchmarks/graph_vs_pyg.py [--sizes 3000 50000] [--epochs 20] [--batches 60] [--threads N]
        [--skip-gcn] [--skip-sage] [--json out.json]
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from deepatlas.data import graphs
from deepatlas.models.graph.gcn import GCN
from deepatlas.models.graph.gcn import Config as GCNConfig
from deepatlas.models.graph.graphsage import Config as SAGEConfig
from deepatlas.models.graph.graphsage import GraphSAGE, SampledNodes

WIDTH, DROPOUT, LR, WEIGHT_DECAY = 32, 0.5, 0.01, 5e-4        # the gcn recipe
SAGE_WIDTH, FANOUTS, BATCH = 64, [25, 10], 512                # the graphsage recipe


# ---- 1. GCN full-batch epochs ----------------------------------------------------------------------

class PygGCN(nn.Module):
    def __init__(self, f: int, k: int):
        super().__init__()
        from torch_geometric.nn import GCNConv
        self.convs = nn.ModuleList([GCNConv(f, WIDTH), GCNConv(WIDTH, k)])

    def forward(self, x, edge_index):
        h = self.convs[0](F.dropout(x, DROPOUT, self.training), edge_index).relu()
        return self.convs[1](F.dropout(h, DROPOUT, self.training), edge_index)


def epoch_time(model, run, opt, mask, y) -> float:
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(run()[mask], y[mask]).backward()
    opt.step()
    return time.perf_counter() - start


def gcn(nodes: int, args) -> dict:
    g = graphs.load(f"sbm-{nodes}").train.graph
    torch.manual_seed(0)
    ours = GCN(GCNConfig(in_features=g.x.shape[1], n_outputs=5, width=WIDTH, dropout=DROPOUT))
    theirs = PygGCN(g.x.shape[1], 5)
    with torch.no_grad():                                        # the same weights
        for conv, peer in zip(ours.convs, theirs.convs):
            peer.lin.weight.copy_(conv.linear.weight)
            peer.bias.copy_(conv.bias)
    sides = {"ours": (ours, lambda: ours(g)), "pyg": (theirs, lambda: theirs(g.x, g.edge_index))}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=WEIGHT_DECAY) for k, (m, _) in sides.items()}
    times = {"ours": [], "pyg": []}
    for i in range(args.warmup + args.epochs):
        for name, (model, run) in sides.items():
            seconds = epoch_time(model.train(), run, opts[name], g.mask, g.y)
            if i >= args.warmup:
                times[name].append(seconds)
    ours_ms, pyg_ms = (1e3 * statistics.median(times[k]) for k in ("ours", "pyg"))
    return {"bench": "gcn epoch", "nodes": nodes, "edges": g.edge_index.shape[1], "ours_ms": round(ours_ms, 2),
            "pyg_ms": round(pyg_ms, 2), "ratio": round(ours_ms / pyg_ms, 3)}


# ---- 2. GraphSAGE sampled mini-batches -------------------------------------------------------------

class PygSAGE(nn.Module):
    """SAGEConv (mean, root weight), ReLU, L2 norm per layer, then a linear head: our GraphSAGE's function."""

    def __init__(self, f: int, k: int):
        super().__init__()
        from torch_geometric.nn import SAGEConv
        widths = [f] + [SAGE_WIDTH] * len(FANOUTS)
        self.convs = nn.ModuleList(SAGEConv(a, b, aggr="mean") for a, b in zip(widths, widths[1:]))
        self.head = nn.Linear(SAGE_WIDTH, k)

    def forward(self, x, edge_index, seeds: int):
        """NeighborLoader's way: every layer over every node of the sampled subgraph, the seeds' rows read out."""
        for conv in self.convs:
            x = F.normalize(conv(x, edge_index).relu(), dim=-1)
        return self.head(x[:seeds])

    def blocks(self, x, tables: tuple[torch.Tensor, ...]):
        """Bipartite blocks, the same computation as ours: layer k from B^{k-1}'s rows to B^k's (n_k) only."""
        for conv, table in zip(self.convs, tables):
            n = table.shape[0]
            edges = torch.stack([table.reshape(-1), torch.arange(n).repeat_interleave(table.shape[1])])
            x = F.normalize(conv((x, x[:n]), edges, size=(x.shape[0], n)).relu(), dim=-1)
        return self.head(x)


def neighbor_loader_works() -> str:
    """'' when PyG's NeighborLoader can sample here, else why not."""
    from torch_geometric.data import Data
    from torch_geometric.loader import NeighborLoader
    try:
        data = Data(x=torch.zeros(3, 1), edge_index=torch.tensor([[0, 1], [1, 2]]), num_nodes=3)
        next(iter(NeighborLoader(data, num_neighbors=[1], batch_size=1)))
        return ""
    except ImportError as e:
        return str(e)


def as_subgraph(tables: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Our nested tables as one subgraph's edge index (2, E): every sampled (neighbour row -> target row) pair."""
    parts = []
    for table in tables:                                            # (n_k, S_k)
        target = torch.arange(table.shape[0]).repeat_interleave(table.shape[1])
        parts.append(torch.stack([table.reshape(-1), target]))
    return torch.cat(parts, 1)


def sage_side(side: str, args) -> dict:
    """One side in this (fresh) process: batches per second and peak memory."""
    data = graphs.load("sbm-large")
    loaded_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gc.collect()
    fresh = reset_peak()
    g = data.train.graph
    torch.manual_seed(0)
    dataset = SampledNodes(g, FANOUTS)
    if side == "ours":
        model = GraphSAGE(SAGEConfig(in_features=g.x.shape[1], n_outputs=5, width=SAGE_WIDTH, fanouts=FANOUTS))
        def step(b):
            return model(b)
    elif side == "pyg":
        model = PygSAGE(g.x.shape[1], 5)
        def step(b):
            return model(b.x, as_subgraph(b.neighbours), len(b.y))
    else:
        model = PygSAGE(g.x.shape[1], 5)
        def step(b):
            return model.blocks(b.x, b.neighbours)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    order = torch.randperm(len(dataset))
    seconds = 0.0
    for i in range(args.warmup + args.batches):
        start = time.perf_counter()
        batch = dataset.collate(dataset.__getitems__(order[i * BATCH:(i + 1) * BATCH].tolist()))
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(step(batch), batch.y).backward()
        opt.step()
        if i >= args.warmup:
            seconds += time.perf_counter() - start
    training_kib = peak_since_reset() if fresh else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"side": side, "batches_per_s": round(args.batches / seconds, 2),
            "training_peak_mib": None if training_kib is None else round(training_kib / 1024, 1),
            "load_peak_mib": round(loaded_kib / 1024, 1)}


def reset_peak() -> bool:
    """Linux: reset this process's peak resident set (VmHWM) so that the training's own peak can be read."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_since_reset() -> int:
    """VmHWM in KiB: the peak resident set since `reset_peak`."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def sage(args) -> dict:
    why = neighbor_loader_works()
    rows = {}
    for side in ("ours", "pyg", "pyg-blocks"):                      # each in a fresh child: its own peak memory
        child = [sys.executable, __file__, "--sage-side", side, "--batches", str(args.batches),
                 "--warmup", str(args.warmup), "--threads", str(args.threads)]
        rows[side] = json.loads(subprocess.run(child, capture_output=True, text=True, check=True).stdout)
    return {"bench": "graphsage sbm-large", "fanouts": FANOUTS, "batch": BATCH,
            "pyg_sampler": "NeighborLoader" if not why else f"ours (NeighborLoader: {why})",
            "ours_batches_per_s": rows["ours"]["batches_per_s"], "pyg_batches_per_s": rows["pyg"]["batches_per_s"],
            "speed_ratio": round(rows["ours"]["batches_per_s"] / rows["pyg"]["batches_per_s"], 3),
            "pyg_blocks_batches_per_s": rows["pyg-blocks"]["batches_per_s"],
            "blocks_speed_ratio": round(rows["ours"]["batches_per_s"] / rows["pyg-blocks"]["batches_per_s"], 3),
            **{f"{k.replace('-', '_')}_training_peak_mib": rows[k]["training_peak_mib"] for k in rows},
            "load_peak_mib": rows["ours"]["load_peak_mib"]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3_000, 50_000], help="sbm nodes for the GCN part")
    parser.add_argument("--epochs", type=int, default=20, help="timed GCN epochs per side")
    parser.add_argument("--batches", type=int, default=60, help="timed GraphSAGE mini-batches per side")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-gcn", action="store_true")
    parser.add_argument("--skip-sage", action="store_true")
    parser.add_argument("--sage-side", choices=["ours", "pyg", "pyg-blocks"], help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sage_side:
        print(json.dumps(sage_side(args.sage_side, args)))
        sys.exit(0)
    print(f"threads={torch.get_num_threads()}")
    rows = []
    if not args.skip_gcn:
        print(f"GCN: 2 layers, width {WIDTH}, dropout {DROPOUT}, AdamW lr {LR}; full-batch epoch, median")
        for nodes in args.sizes:
            r = gcn(nodes, args)
            rows.append(r)
            print(f"  sbm-{nodes:<7d} ({r['edges']:,} edges)  ours {r['ours_ms']:8.2f} ms   "
                  f"PyG GCNConv {r['pyg_ms']:8.2f} ms   ratio {r['ratio']:.2f}x")
    if not args.skip_sage:
        r = sage(args)
        rows.append(r)
        print(f"GraphSAGE on sbm-large: fan-outs {FANOUTS}, batch {BATCH}, width {SAGE_WIDTH}; PyG side sampled by "
              f"{r['pyg_sampler']}")
        mib = {k: "?" if r[f"{k}_training_peak_mib"] is None else f"{r[f'{k}_training_peak_mib']:.0f}"
               for k in ("ours", "pyg", "pyg_blocks")}
        print("  mini-batches/s (sampling, forward, backward, step) and peak RSS while training (ours/PyG > 1: ours faster)")
        print(f"  ours                           {r['ours_batches_per_s']:7.2f}/s  {mib['ours']:>5s} MiB")
        print(f"  PyG SAGEConv, whole subgraph   {r['pyg_batches_per_s']:7.2f}/s  {mib['pyg']:>5s} MiB   "
              f"ours/PyG {r['speed_ratio']:.2f}x")
        print(f"  PyG SAGEConv, bipartite blocks {r['pyg_blocks_batches_per_s']:7.2f}/s  {mib['pyg_blocks']:>5s} MiB   "
              f"ours/PyG {r['blocks_speed_ratio']:.2f}x")
        print(f"  (peak RSS while building sbm-large, before training: {r['load_peak_mib']:.0f} MiB)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
