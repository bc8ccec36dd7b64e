"""Tasks turn one shard row into a text example (prompt, target, image, candidates).

A row is `mmkg.retrieval.dataset.SubgraphDataset.row(i)`: the query fields the task names in `fields`
plus the subgraph's parallel triple lists (`head_ids`, `relation_ids`, `tail_ids`, their
`*_labels`, `scores`); ids, keys and labels come from the shard, not resolved again.

Registry `task`:
* `mars` — analogical reasoning (e_h : e_t :: e_q : ?), ranked over the 2,063 MARS candidates;
* `scienceqa` — multiple choice; the prediction is the best-scoring choice;
* `kg-triple` — stage-1 knowledge pretraining: complete (head, relation, ?) for a triple of the
  retrieved subgraph (the subgraph is the knowledge prefix, so the adapter learns to read it);
* `kg-image` — stage-1 image/entity pretraining: name the entity an image shows (only subgraphs
  holding an entity with an image in the store yield examples); its image/entity pair also
  feeds the alignment loss.
Both pretraining tasks draw from the same shards, so training never calls retrieval.

Every example also carries the subgraph's triples as `facts` (labels, in descending retrieval
score) for models that read knowledge as text (`MultimodalKGModel.knowledge_text`), and the
store id of its anchor (question) entity, which the graph encoder marks. `kg-triple` leaves the
asked triple out of its facts (else the text answers by copying and the graph path learns
nothing); `kg-image` gives none (the entity's name would be in them).
"""
from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mmkg.kg_store.registry import family
from mmkg.model.kg_text import KGText
from mmkg.model.scoring import MarsScorer, ScienceQAScorer
from mmkg.retrieval.datasets.mars import mars_image_slots, mars_model_image_slot

task_registry = family("task")


@dataclass
class Example:
    """One model input in text form, plus what evaluation needs."""

    query_id: str
    prompt: str
    target: str
    #: image file for the visual adapter (None: no image)
    image: Path | None = None
    #: store id of the entity the image shows (alignment positive); -1 when unknown
    align_entity: int = -1
    #: multiple-choice candidate texts (ScienceQA); MARS ranks a shared candidate list instead
    choices: list[str] | None = None
    answer_index: int = -1
    #: MARS gold entity key
    gold_key: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    #: retrieved triples as text, (head, relation, tail, score) in descending score
    facts: list[tuple[str, str, str, float]] = field(default_factory=list)
    #: store id of the anchor (question) entity the graph encoder marks; -1 when none
    anchor_entity: int = -1


class Task(Protocol):
    name: str
    #: shard columns (beyond the subgraph) the task reads
    fields: tuple[str, ...]

    def make_example(self, row: dict[str, Any], kg_text: KGText, index: int) -> Example | None: ...


def field_of(row: dict[str, Any], *names: str, default: Any = None) -> Any:
    """First present field among `names` (shard field names differ slightly by producer)."""
    for n in names:
        v = row.get(n)
        if v is not None:
            return v
    return default


def _as_list(v: Any) -> list:
    if v is None:
        return []
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            return [v]
    return list(np.asarray(v, dtype=object).tolist()) if not isinstance(v, list) else v


def _query_id(row: dict[str, Any], index: int) -> str:
    return str(field_of(row, "query_id", default=index))


def facts_of(row: dict[str, Any], *, skip: int | None = None) -> list[tuple[str, str, str, float]]:
    """The row's triples as (head, relation, tail, score) labels, in descending score (stable: the
    shard's order among equal scores); `skip` leaves out the triple at that row position."""
    labels = [row.get(c) for c in ("head_labels", "relation_labels", "tail_labels")]
    if any(v is None for v in labels):
        return []
    scores = row.get("scores")
    n = len(labels[0])
    scores = np.zeros(n, np.float32) if scores is None or len(scores) != n else np.asarray(scores, np.float32)
    order = np.argsort(-scores, kind="stable")
    return [(str(labels[0][j]), str(labels[1][j]), str(labels[2][j]), float(scores[j]))
            for j in order.tolist() if j != skip]


#: what an entity given only as an image is called in a MARS prompt (`image_entities="image"`)
MARS_IMAGE_WORDS = ("this image", "another image")


@task_registry.register("mars")
class MarsTask:
    """(e_h, e_t) : (e_q, ?) → e_a, phrased in entity labels.

    Args:
        image_entities (str): "label" (default) names every entity by its label, the image of the
            model's image slot comes on top; "image" gives the entities the MARS mode shows as
            images (`mmkg.retrieval.datasets.mars.mars_image_slots`) only as images, as the MARS protocol
            does: their labels leave the prompt ("this image" for the one image the model gets,
            `mars_model_image_slot`; "another image" for a further image role, which a
            single-image model such as MR-MKG then does not see). An entity without any image
            keeps its label (as in the query builder). "label" is the documented default while
            only random CLIP weights ship offline.
    """

    name = "mars"
    IMAGE_ENTITIES = ("label", "image")
    #: how `evaluate` scores an example and sums the metrics (a task without one is for training)
    scorer = MarsScorer
    #: the paper's fine-tuning hyper-parameters (MR-MKG §4.1), used when a stage gives none
    paper_defaults = {"lr": 5e-6, "batch_size": 4, "epochs": 1}

    #: shard columns this task reads (retrieval's MARS query fields)
    fields = ("example", "question", "answer", "relation", "mode", "question_entity", "example_entities",
              "image_paths", "image_entities", "example_labels", "question_label", "answer_label")

    def __init__(self, *, image_entities: str = "label"):
        if image_entities not in self.IMAGE_ENTITIES:
            raise ValueError(f"image_entities must be one of {self.IMAGE_ENTITIES}, not {image_entities!r}")
        self.image_entities = image_entities

    def make_example(self, row: dict[str, Any], kg_text: KGText, index: int) -> Example | None:
        example = _as_list(field_of(row, "example"))
        q, a = field_of(row, "question"), field_of(row, "answer")  # entity keys (QIDs)
        if len(example) != 2 or q is None or a is None:
            return None
        # labels as the query builder wrote them (older shards: looked up by key)
        h, t = _as_list(field_of(row, "example_labels")) or [kg_text.entity_by_key(k) for k in example]
        q_label = field_of(row, "question_label", default=None) or kg_text.entity_by_key(q)
        a_label = field_of(row, "answer_label", default=None) or kg_text.entity_by_key(a)
        mode = int(field_of(row, "mode", default=0))
        # the entity shown as the model's image: one rule, shared with the query builder
        slot = mars_model_image_slot(mode)
        image_entity = kg_text.id_of((*example, q)[slot]) if slot is not None else -1
        # the shard pairs each query image with the entity it shows (image_paths ∥ image_entities)
        shown = dict(zip((int(e) for e in _as_list(field_of(row, "image_entities"))),
                         _as_list(field_of(row, "image_paths"))))
        if image_entity in shown:
            image = Path(shown[image_entity])
        else:
            image = kg_text.image_of(image_entity) if image_entity >= 0 else None
        names = [h, t, q_label]
        hidden: list[int] = []
        if self.image_entities == "image":
            for s in mars_image_slots(mode):
                eid = kg_text.id_of((*example, q)[s])
                if s == slot:
                    has_image = image is not None
                else:
                    has_image = eid in shown or (eid >= 0 and kg_text.image_of(eid) is not None)
                if has_image:
                    names[s] = MARS_IMAGE_WORDS[0] if s == slot else MARS_IMAGE_WORDS[1]
                    hidden.append(s)
        prompt = f"Analogy: {names[0]} is to {names[1]} as {names[2]} is to"
        anchor = field_of(row, "question_entity", default=None)
        anchor = int(anchor) if anchor is not None else kg_text.id_of(str(q))
        return Example(query_id=_query_id(row, index), prompt=prompt, target=a_label, image=image,
                       align_entity=image_entity if image is not None else -1, gold_key=str(a),
                       meta={"mode": mode, "relation": field_of(row, "relation"), "hidden_slots": hidden,
                             "question": str(q), "example": [str(k) for k in example]},
                       facts=facts_of(row), anchor_entity=anchor)


@task_registry.register("scienceqa")
class ScienceQATask:
    """Question + context + lettered options → the gold option, as text."""

    name = "scienceqa"
    scorer = ScienceQAScorer
    paper_defaults = {"lr": 4e-5, "batch_size": 1, "epochs": 3}
    fields = ("question", "choices", "answer", "hint", "subject", "grade", "image", "image_path")

    def __init__(self, *, image_root: str | Path | None = None):
        self.image_root = Path(image_root) if image_root else None

    def make_example(self, row: dict[str, Any], kg_text: KGText, index: int) -> Example | None:
        choices = [str(c) for c in _as_list(field_of(row, "choices"))]
        answer = field_of(row, "answer")
        if not choices or answer is None:
            return None
        options = [f"({string.ascii_uppercase[i]}) {c}" for i, c in enumerate(choices)]
        hint = str(field_of(row, "hint", default="") or "")
        prompt = f"Question: {field_of(row, 'question', default='')}\n"
        if hint:
            prompt += f"Context: {hint}\n"
        prompt += f"Options: {' '.join(options)}\nAnswer:"
        # `image` is the problem's own field (IMG category); `image_path` the file when it exists
        image_path = field_of(row, "image_path")
        image = None
        if image_path:
            p = Path(str(image_path))
            image = p if p.is_absolute() or self.image_root is None else self.image_root / p
        return Example(query_id=_query_id(row, index), prompt=prompt, target=options[int(answer)], image=image,
                       choices=options, answer_index=int(answer),
                       meta={"subject": field_of(row, "subject"), "grade": field_of(row, "grade"),
                             "hint": hint, "image": field_of(row, "image")},
                       facts=facts_of(row))


@task_registry.register("kg-triple")
class TripleCompletionTask:
    """Complete (head, relation, ?) for one triple of the subgraph (picked by `seed` + index)."""

    name = "kg-triple"
    fields = ()

    def __init__(self, *, seed: int = 0):
        self.seed = seed

    def make_example(self, row: dict[str, Any], kg_text: KGText, index: int) -> Example | None:
        n_edges = len(row["head_ids"])
        if n_edges == 0:
            return None
        j = int(np.random.default_rng([self.seed, index]).integers(n_edges))
        h, r, t = (row[c][j] for c in ("head_labels", "relation_labels", "tail_labels"))
        return Example(query_id=f"{_query_id(row, index)}#triple{j}", prompt=f"Complete the triple: ({h}, {r}, ?)",
                       target=str(t), facts=facts_of(row, skip=j), anchor_entity=int(row["head_ids"][j]))


@task_registry.register("kg-image")
class ImageEntityTask:
    """Name the entity an image shows; the entity is a subgraph node that has a stored image."""

    name = "kg-image"
    fields = ()

    def make_example(self, row: dict[str, Any], kg_text: KGText, index: int) -> Example | None:
        # the subgraph's nodes in the order a `Data` numbers them (sorted store ids)
        for node in np.unique(np.concatenate([row["head_ids"], row["tail_ids"]])).tolist():
            image = kg_text.image_of(node)
            if image is not None:
                return Example(query_id=f"{_query_id(row, index)}#image{node}", prompt="The image shows",
                               target=kg_text.entity(node), image=image, align_entity=int(node))
        return None


def resolve_task(name: str, **kwargs: Any) -> Task:
    return task_registry.get(name)(**kwargs)
