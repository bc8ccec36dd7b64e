"""Train on the shards from Python: the KG, its shards as pandas / Arrow / PyG batches, a task
dataset, and a few optimizer steps of a tiny MR-MKG (docs/API.md walks through the same calls).

    python examples/train_on_shards.py                       # after `make demo` (build/demo-kg)
    python examples/train_on_shards.py --kg DIR --split dev --steps 5

Prints one line per step (loss) and a last JSON line with what it read and trained.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere in a clone


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kg", default="build/demo-kg", help="KG directory (default: the demo's)")
    ap.add_argument("--dataset", default="mars")
    ap.add_argument("--split", default="train")
    ap.add_argument("--shards", default=None, help="a shard folder instead of --dataset/--split")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=4)
    args = ap.parse_args(argv)

    import pandas as pd
    import torch

    from mmkg.kg_store import open_store
    from mmkg.kg_store.shards import parts_dir, read_meta, read_shards
    from mmkg.model import resolve_model
    from mmkg.model.batching import Collator
    from mmkg.model.data import build_task_dataset, resolve_shard_dirs
    from mmkg.model.kg_text import KGText
    from mmkg.retrieval.dataset import SubgraphDataset, subgraph_loader

    # 1. the KG: the current version of the store, its tables as Arrow
    store = open_store(args.kg)
    print(f"KG version {store.kg_version}: {store.count('entities'):,} entities, "
          f"{store.count('triples'):,} triples", file=sys.stderr)

    # 2. its shards: a finished shard folder by dataset and split (or a path)
    spec = args.shards or {"dataset": args.dataset, "split": args.split}
    [shard_dir] = resolve_shard_dirs(args.kg, spec)
    meta = read_meta(shard_dir)                        # encoder, config, kg_version, queries
    df = pd.read_parquet(parts_dir(shard_dir))         # plain pandas (pyarrow.dataset reads it too)
    table = read_shards(shard_dir, ["query_id", "relation_labels"])  # Arrow, selected columns

    # 3. the same rows as PyG graphs: entity vectors as node features, relation vectors on edges
    graphs = SubgraphDataset(shard_dir, args.kg)
    batch = next(iter(subgraph_loader(graphs, batch_size=args.batch_size)))

    # 4. a task dataset (graph, example) and a tiny model: a random 2-layer T5 and a small GAT
    kg_text = KGText.from_store(store)
    task_data, graphs = build_task_dataset(kg=args.kg, kg_text=kg_text, shards=spec, task=args.dataset)
    torch.manual_seed(0)
    net = resolve_model("mrmkg", backbone="tiny-t5", vision=None, gnn_layer="gat", kg_hidden=32,
                        max_text_length=64, node_dim=graphs.dim, num_relations=store.num_relations)
    collate = Collator.for_model(net, kg_text=kg_text)
    loader = torch.utils.data.DataLoader(task_data, batch_size=args.batch_size, shuffle=True,
                                         collate_fn=collate, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    net.train()
    losses, t0 = [], time.perf_counter()
    for step, model_batch in enumerate(loader, 1):
        loss = net(model_batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(round(float(loss.detach()), 4))
        print(f"step {step}/{args.steps}  loss {losses[-1]:.4f}", file=sys.stderr)
        if step == args.steps:
            break
    out = {"kg_version": store.kg_version, "shard_dir": str(shard_dir), "encoder": meta["encoder"],
           "rows": len(df), "arrow_rows": table.num_rows, "columns": list(df.columns[:5]),
           "pyg_batch": {"graphs": int(batch.num_graphs), "nodes": int(batch.num_nodes),
                         "edges": int(batch.edge_index.shape[1]), "node_dim": int(batch.x.shape[1])},
           "examples": len(task_data), "steps": len(losses), "losses": losses,
           "seconds": round(time.perf_counter() - t0, 2)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
