"""Facts gate: the KG's own confidence decides whether the LLM reads the retrieved facts.

With the facts in the prompt a frozen LLM gains when the answer is an endpoint of a retrieved fact
and loses when the facts are distractors; the gate shows them only when a signal of the KG (never
the gold) says they are likely to hold the answer. A closed gate gives exactly the no-facts prompt
(`evaluate(facts_gate=...)` empties the example's facts, so the text is the question alone).

Registry `facts_gate` (signals; the gate opens when signal ≥ threshold, the threshold fitted on dev or
held-out train, never test). A signal sees the shortlist (`mmkg.model.scoring.Shortlist`), the
query's example, the shortlist's candidate positions (best first) and the store ids of the retrieved
facts' endpoints:
* `prior_top` — the path prior's best score over the shortlist (how sure the KG's paths are);
* `endpoint_top` — 1 if the shortlist's first candidate is an endpoint of a retrieved fact, else 0;
* `endpoints_in_shortlist` — how many shortlist candidates are fact endpoints (the question entity
  never counts);
* `prior_top_endpoint` — the path prior's best score over the shortlist candidates that are fact
  endpoints (0 when none is): how sure the KG's paths are of an entity the facts name.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from mmkg.kg_store.errors import ConfigError
from mmkg.kg_store.registry import family

gate_signals = family("facts_gate")

Signal = Callable[[Any, Any, np.ndarray, np.ndarray], float]


def fact_endpoints(graph: Any) -> np.ndarray:
    """Store ids of the entities that are a head or tail of one of the (kept) retrieved triples."""
    if graph.edge_index.numel() == 0:
        return np.zeros(0, np.int64)
    nodes = np.asarray(graph.node_ids)
    return np.unique(nodes[np.unique(graph.edge_index.cpu().numpy())])


def _question_id(short: Any, ex: Any) -> int:
    return int(short.ctx.store.entity_ids([ex.meta["question"]])[0])


@gate_signals.register("prior_top")
def prior_top(short: Any, ex: Any, top: np.ndarray, endpoints: np.ndarray) -> float:
    q = short.ctx.query({"question": ex.meta["question"], "example": ex.meta["example"]})
    return float(short.ctx.prior_scores(q).scores[top].max()) if len(top) else 0.0


@gate_signals.register("endpoint_top")
def endpoint_top(short: Any, ex: Any, top: np.ndarray, endpoints: np.ndarray) -> float:
    return float(len(top) > 0 and bool(np.isin(short.ctx.candidate_ids[top[0]], endpoints)))


@gate_signals.register("endpoints_in_shortlist")
def endpoints_in_shortlist(short: Any, ex: Any, top: np.ndarray, endpoints: np.ndarray) -> float:
    ends = endpoints[endpoints != _question_id(short, ex)]
    return float(np.isin(short.ctx.candidate_ids[top], ends).sum())


@gate_signals.register("prior_top_endpoint")
def prior_top_endpoint(short: Any, ex: Any, top: np.ndarray, endpoints: np.ndarray) -> float:
    ends = endpoints[endpoints != _question_id(short, ex)]
    named = top[np.isin(short.ctx.candidate_ids[top], ends)]
    if not len(named):
        return 0.0
    q = short.ctx.query({"question": ex.meta["question"], "example": ex.meta["example"]})
    return float(short.ctx.prior_scores(q).scores[named].max())


class FactsGate:
    """`{"signal": NAME, "threshold": T}`: open (facts shown) when the signal is ≥ T."""

    def __init__(self, spec: Mapping[str, Any]):
        if set(spec) != {"signal", "threshold"}:
            raise ConfigError(f"facts_gate takes signal and threshold; got {dict(spec)}")
        self.name, self.threshold = str(spec["signal"]), float(spec["threshold"])
        self.signal: Signal = gate_signals.get(self.name)
        self.fingerprint = {"signal": self.name, "threshold": self.threshold}

    def values(self, short: Any, ex: Any, top: np.ndarray, graph: Any) -> dict[str, float]:
        """Every registered signal of the query (the gate reads `self.name`'s; the others are
        recorded so a threshold can be fitted offline on a run with the gate always open)."""
        ends = fact_endpoints(graph)
        return {name: float(gate_signals.get(name)(short, ex, top, ends)) for name in gate_signals.names()}

    def opens(self, value: float) -> bool:
        return value >= self.threshold
