"""A small TransE knowledge-graph embedding of a store's triples, and the MARS scores read from it.

TransE (h + r ≈ t, L2 distance) is trained on every (h, r, t) of the store's triples with a margin
loss against corrupted heads and tails: seeded, CPU, well under a minute on MarKG (11k entities,
33k triples). The weights are written as safetensors (no pickle) and committed under the KG at
`retrievers/kge/<key>.safetensors`, `key` naming the graph and every hyper-parameter, so a second
use reads them back instead of training again (`load_or_train_kge`).

The reranker reads two scores per (question q, candidate c) of a MARS query whose example pair is
(h, t) — the query's own input, never its answer:
* analogy — −‖q + (t − h) − c‖: the example pair's offset applied to the question;
* link — the best link between q and c over every relation and both directions:
  −min_r min(‖q + r − c‖, ‖c + r − q‖).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

KGE_DIR = "retrievers/kge"
KGE_FORMAT = 1


@dataclass(frozen=True)
class KGEParams:
    """Everything the weights depend on besides the graph."""

    MODELS: ClassVar[tuple[str, ...]] = ("transe",)
    dim: int = 64
    """width of entity and relation vectors"""
    lr: float = 0.01
    """Adam learning rate"""
    margin: float = 1.0
    """margin of the ranking loss between a triple and each of its corruptions"""
    negatives: int = 16
    """corruptions (head or tail replaced) per triple"""
    epochs: int = 30
    batch: int = 2048
    seed: int = 0
    model: str = "transe"
    """the scoring function, one of MODELS (TransE: −‖h + r − t‖)"""


@dataclass
class KGEmbedding:
    """TransE entity (N, d) and relation (R, d) vectors by store id."""

    entity: np.ndarray
    relation: np.ndarray
    meta: dict[str, str]

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """(n, d) entity vectors; zeros for ids < 0 (an entity the store lacks)."""
        ids = np.asarray(ids, np.int64)
        out = np.zeros((len(ids), self.entity.shape[1]), np.float32)
        out[ids >= 0] = self.entity[ids[ids >= 0]]
        return out

    def analogy_scores(self, question: int, head: int, tail: int, cands: np.ndarray) -> np.ndarray:
        """−‖q + (t − h) − c‖ of each candidate id (0 everywhere when q, h or t is unknown)."""
        if min(question, head, tail) < 0:
            return np.zeros(len(cands), np.float32)
        q, h, t = self.entity[[question, head, tail]]
        return -np.linalg.norm(q + (t - h) - self.vectors(cands), axis=1)

    def link_scores(self, question: int, cands: np.ndarray) -> np.ndarray:
        """−min over relations and directions of ‖q + r − c‖, ‖c + r − q‖ (0 where q is unknown)."""
        if question < 0:
            return np.zeros(len(cands), np.float32)
        q, c, r = self.entity[question], self.vectors(cands), self.relation
        forward = _min_sq_dist(q[None, :] + r, c)          # q + r ≈ c
        backward = _min_sq_dist(q[None, :] - r, c)         # c + r ≈ q  ⇔  c ≈ q − r
        return -np.sqrt(np.maximum(np.minimum(forward, backward), 0.0))


def _min_sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(b),) min over rows of `a` of the squared distance to each row of `b`."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return d.min(axis=0)


def kge_key(store: Any, params: KGEParams) -> str:
    from mmkg.kg_store.hashing import cache_key
    return cache_key({"format": KGE_FORMAT, "graph": store.graph_rel, **asdict(params)})


def train_kge(triples: np.ndarray, num_entities: int, num_relations: int, params: KGEParams = KGEParams(),
              *, threads: int = 2) -> KGEmbedding:
    """TransE by margin ranking (each positive against `negatives` corruptions of its head or tail),
    entities renormalised to the unit ball after every step (Bordes et al. 2013), Adam."""
    import torch
    if params.model not in KGEParams.MODELS:
        from mmkg.kg_store.errors import ConfigError
        raise ConfigError(f"unknown KG embedding model {params.model!r}: {', '.join(KGEParams.MODELS)}")
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(params.seed)
    bound = 6.0 / params.dim ** 0.5
    ent = torch.nn.Parameter(torch.empty(num_entities, params.dim).uniform_(-bound, bound, generator=g))
    rel = torch.nn.Parameter(torch.empty(num_relations, params.dim).uniform_(-bound, bound, generator=g))
    with torch.no_grad():
        rel /= rel.norm(dim=1, keepdim=True)
        ent /= ent.norm(dim=1, keepdim=True)
    opt = torch.optim.Adam([ent, rel], lr=params.lr)
    data = torch.as_tensor(np.asarray(triples, np.int64))
    n, k = len(data), params.negatives
    losses = []
    for _ in range(params.epochs):
        order = torch.randperm(n, generator=g)
        total = 0.0
        for start in range(0, n, params.batch):
            h, r, t = data[order[start:start + params.batch]].unbind(1)
            b = len(h)
            corrupt = torch.randint(0, num_entities, (b, k), generator=g)
            tail_side = torch.rand(b, k, generator=g) < 0.5
            nh = torch.where(tail_side, h[:, None], corrupt)
            nt = torch.where(tail_side, corrupt, t[:, None])
            pos = (ent[h] + rel[r] - ent[t]).norm(dim=-1)
            neg = (ent[nh] + rel[r][:, None, :] - ent[nt]).norm(dim=-1)
            loss = torch.relu(params.margin + pos[:, None] - neg).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                ent /= ent.norm(dim=1, keepdim=True).clamp(min=1.0)
            total += float(loss.detach()) * b
        losses.append(total / n)
    meta = {"params": _json(asdict(params)), "final_loss": f"{losses[-1]:.6f}", "format": str(KGE_FORMAT)}
    return KGEmbedding(ent.detach().numpy().astype(np.float32), rel.detach().numpy().astype(np.float32), meta)


def _json(obj: Any) -> str:
    import json
    return json.dumps(obj, sort_keys=True)


def save_kge(path: str | Path, emb: KGEmbedding) -> None:
    """Atomically, as safetensors (`entity`, `relation`; the parameters in the header's metadata)."""
    from safetensors.numpy import save

    from mmkg.kg_store import atomic
    atomic.write_bytes(path, save({"entity": np.ascontiguousarray(emb.entity),
                                   "relation": np.ascontiguousarray(emb.relation)}, metadata=emb.meta))


def load_kge(path: str | Path) -> KGEmbedding:
    from safetensors import safe_open
    with safe_open(str(path), framework="numpy") as f:
        return KGEmbedding(f.get_tensor("entity"), f.get_tensor("relation"), dict(f.metadata() or {}))


def load_or_train_kge(kg: str | Path, params: KGEParams = KGEParams()) -> tuple[KGEmbedding, str]:
    """The committed embedding of this graph and these parameters, trained and committed once."""
    from mmkg.kg_store import KGStore, open_store
    store = open_store(kg)
    key = kge_key(store, params)
    rel = f"{KGE_DIR}/{key}"
    if store.artifact(rel) is not None:
        return load_kge(store.checked_path(f"{rel}.safetensors")), key
    t0 = time.perf_counter()
    emb = train_kge(store.triples_array(), store.count("entities"), store.num_relations, params)
    emb.meta.update(key=key, graph=str(store.graph_rel))
    with KGStore.writer(kg) as w:
        save_kge(w.root / f"{rel}.safetensors", emb)
        w.set_artifact(rel, {"key": key, **asdict(params), "final_loss": float(emb.meta["final_loss"]),
                             "seconds": round(time.perf_counter() - t0, 3)}, files=[f"{rel}.safetensors"])
        w.commit()
    return emb, key
