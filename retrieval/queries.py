"""Query builders: dataset files → `Query` objects (text, images, named entities, row fields).

One builder per dataset format in the `query_builder` registry, resolved from the
`<name>:<path>` spec of `mmkg retrieve --dataset`. Builders need the store only to turn
source keys into labels; they never load an encoder.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from kg_store import KGStore
from kg_store.errors import ConfigError, KGStoreError
from kg_store.hashing import sha256_file
from kg_store.registry import family
from kg_store.safe_io import read_bounded
from kg_store.unsafe_text import UNSAFE_CHARS
from pipeline.paths import PathEscapeError, safe_join
from retrieval.paths import mars_row_digest
from retrieval.query_rejects import BadRecord, numbered_lines, query_image, reject

logger = logging.getLogger(__name__)

query_builders = family("query_builder")

#: MarT's modality pattern per MARS mode: roles (example head, example tail, question)
MARS_MODES: dict[int, tuple[str, str, str]] = {
    0: ("text", "text", "image"),   # (T1,T2) -> (I1,?)
    1: ("image", "image", "text"),  # (I1,I2) -> (T1,?)
    2: ("image", "text", "image"),  # (I1,T1) -> (I2,?)
}
MARS_SLOTS = ("example head", "example tail", "question")


def mars_image_slots(mode: int) -> tuple[int, ...]:
    """Positions (0 example head, 1 example tail, 2 question) that MARS `mode` shows as images."""
    return tuple(i for i, role in enumerate(MARS_MODES.get(int(mode), ("text",) * 3)) if role == "image")


def mars_model_image_slot(mode: int) -> int | None:
    """The one image a single-image model (MR-MKG's visual adapter) is given for `mode`: the
    question's when the question is shown as an image, else the first image of the example pair."""
    slots = mars_image_slots(mode)
    return 2 if 2 in slots else (slots[0] if slots else None)


#: the MARS candidate entities (every answer is one of them), beside the split files
MARS_CANDIDATES = "analogy_entities.txt"
_IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"}


@dataclass
class Query:
    """One retrieval query; `fields` are copied verbatim into the shard row."""

    query_id: str
    text: str
    image_paths: list[str] = field(default_factory=list)
    entity_keys: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    #: the query's example pair (MARS: [head key, tail key]); a retriever may read it, never `fields`
    example_keys: list[str] = field(default_factory=list)
    #: identity of the query's own dataset row (MARS: `retrieval.paths.mars_row_digest`); never read
    #: by a retriever, only by the stage that decides which prior a query may use
    row_digest: str = ""
    #: fold of the path prior to leave out (-1: the whole train file's prior): set for a query that
    #: is itself a row of the prior's train file, so its own answer never counts in its prior
    prior_fold: int = -1


@dataclass
class QuerySet:
    """The queries of one dataset split plus what identifies the input (for the cache key)."""

    dataset: str
    split: str
    queries: list[Query]
    source_files: list[Path]
    #: Arrow types of the `fields` columns (so empty lists and all-null columns keep their type)
    field_types: dict[str, pa.DataType] = field(default_factory=dict)
    #: one per bad record of the input (retrieval.query_rejects.reject): location, reason, raw
    rejects: list[dict[str, Any]] = field(default_factory=list)
    #: entity ids every answer lies in, when the task declares them (MARS: the candidate file)
    answer_space: np.ndarray | None = None
    #: the dataset's train split file (a retriever may learn from it), when there is one
    train_file: Path | None = None

    def source_sha256(self) -> str:
        return ";".join(f"{p.name}:{sha256_file(p)}" for p in self.source_files)


def parse_dataset_spec(spec: str) -> tuple[str, Path]:
    """`scienceqa:PATH` → ("scienceqa", PATH); the name must be a registered builder."""
    name, sep, path = spec.partition(":")
    if not sep or not path:
        raise ConfigError(f"--dataset must look like NAME:PATH (one of {', '.join(query_builders.names())}), "
                           f"got {spec!r}")
    if name not in query_builders:
        raise ConfigError(f"unknown dataset kind {name!r}; choose one of: {', '.join(query_builders.names())}")
    p = Path(path)
    if not p.exists():
        raise KGStoreError(f"dataset path {p} does not exist")
    return name, p


def build_queries(spec: str, *, store: KGStore | None = None, split: str | None = None,
                  with_images: bool = False, limit: int | None = None) -> QuerySet:
    """Resolve `NAME:PATH` and build its queries (the first `limit` only, when given)."""
    name, path = parse_dataset_spec(spec)
    builder: Callable[..., QuerySet] = query_builders.get(name)
    qs = builder(path, store=store, split=split, with_images=with_images)
    if limit is not None:
        qs.queries = qs.queries[:limit]
    if with_images:
        _check_query_images(qs)
    return qs


def _check_query_images(qs: QuerySet) -> None:
    """Query images go through the ingest limits (pipeline.images: regular file, size, pixel
    bomb refused from the header, full decode): a query whose image fails becomes one reject
    row (`image <code>: detail`) instead of aborting the run when the encoder decodes it."""
    from pipeline.images import ImageOutcome, open_user_image
    seen: dict[str, str | None] = {}
    kept = []
    for q in qs.queries:
        for p in q.image_paths:
            if p not in seen:
                out = open_user_image(p)
                seen[p] = out.reject_reason if isinstance(out, ImageOutcome) else None
            if seen[p] is not None:
                where = qs.source_files[0] if qs.source_files else Path(qs.dataset)
                qs.rejects.append(reject(where, q.query_id, p, f"image {seen[p]}"))
                break
        else:
            kept.append(q)
    qs.queries = kept


# ---- labels ------------------------------------------------------------------------------

class EntityLabels:
    """Source key → label, through the store (alias keys included)."""

    def __init__(self, store: KGStore):
        self.store = store
        self._labels = store.table("entities", ["label"])["label"].to_numpy(zero_copy_only=False)

    def __call__(self, keys: list[str]) -> list[str]:
        ids = self.store.entity_ids(keys)
        return [str(self._labels[i]) if i >= 0 and self._labels[i] else k for k, i in zip(keys, ids)]


def store_images(store: KGStore | None) -> dict[int, str]:
    """Entity id → path of its first stored (normalised) image blob."""
    if store is None or not store.has_table("images"):
        return {}
    imgs = store.table("images", ["entity_id", "blob"])
    out: dict[int, str] = {}
    for eid, blob in zip(imgs["entity_id"].to_pylist(), imgs["blob"].to_pylist()):
        if eid is not None and blob and eid not in out:
            out[eid] = str(store.path(blob))
    return out


def entity_image(key: str, eid: int, blobs: dict[int, str], image_dirs: list[Path]) -> str | None:
    """One image of an entity: a store blob if it has one, else the first file of `<dir>/<key>/`.

    MarT reads a random file per entity folder; we take the first in name order so that the
    query (and so the cache) is deterministic.
    """
    if eid in blobs:
        return blobs[eid]
    for d in image_dirs:
        try:
            safe_join(d, key)  # the key comes from the data file: "../x" must not leave the folder
        except PathEscapeError:
            continue
        folder = d / key
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_EXTS)
            if files:
                return str(files[0])
    return None


_strs, _ints = pa.list_(pa.string()), pa.list_(pa.int64())
MARS_FIELD_TYPES = {"example": _strs, "question": pa.string(), "answer": pa.string(), "relation": pa.string(),
                    "mode": pa.int64(), "example_entities": _ints, "question_entity": pa.int64(),
                    "answer_entity": pa.int64(), "image_paths": _strs, "image_entities": _ints,
                    "example_labels": _strs, "question_label": pa.string(), "answer_label": pa.string()}
SCIENCEQA_FIELD_TYPES = {"question": pa.string(), "choices": _strs, "answer": pa.int64(), "hint": pa.string(),
                         "subject": pa.string(), "grade": pa.string(), "topic": pa.string(),
                         "category": pa.string(), "task": pa.string(), "lecture": pa.string(),
                         "solution": pa.string(), "image": pa.string(), "image_path": pa.string(),
                         "pid": pa.string()}


# ---- MARS --------------------------------------------------------------------------------

def _split_file(path: Path, split: str | None, pattern: str) -> tuple[Path, str]:
    if path.is_dir():
        if split is None:
            raise KGStoreError(f"{path} is a directory: pass --split")
        f = path / pattern.format(split=split)
        if not f.exists():
            raise KGStoreError(f"no {f.name} in {path}")
        return f, split
    return path, split or path.stem


@query_builders.register("mars", "markg")
def mars_queries(path: Path, *, store: KGStore | None = None, split: str | None = None,
                 with_images: bool = False) -> QuerySet:
    """MARS analogies (e_h, e_t) : (e_q, ?) as "<e_h> is to <e_t> as <e_q> is to ?".

    An entity in an image role (MarT's mode pattern) is given by its image when the encoder
    has a vision tower and an image exists; otherwise by its label, since most MarKG entities
    have no image here and an empty slot would lose the analogy.
    """
    if store is None:
        raise KGStoreError("MARS queries need the KG store (entity labels)")
    file, split = _split_file(path, split, "{split}.json")
    rejects: list[dict[str, Any]] = []
    rows = []  # (index among non-blank lines, row)
    for n, i, line in numbered_lines(file, rejects):
        try:
            rows.append((i, _mars_row(line)))
        except BadRecord as e:
            rejects.append(reject(file, n, line, str(e)))
    labels = EntityLabels(store)
    keys = sorted({k for _, r in rows for k in (*r["example"], r["question"], r["answer"])})
    label_of = dict(zip(keys, labels(keys)))
    id_of = dict(zip(keys, store.entity_ids(keys).tolist()))
    image_dirs = [file.parent / "images"]
    blobs = store_images(store) if with_images else {}
    queries = []
    for i, r in rows:
        (eh, et), eq = r["example"], r["question"]
        shown = mars_image_slots(r["mode"])
        parts, images, image_entities = [], [], []
        for slot, key in enumerate((eh, et, eq)):
            img = entity_image(key, id_of[key], blobs, image_dirs) if with_images and slot in shown else None
            if img is not None:
                images.append(img)
                image_entities.append(id_of[key])
                parts.append("this image")
            else:
                parts.append(label_of[key])
        text = f"{parts[0]} is to {parts[1]} as {parts[2]} is to ?"
        queries.append(Query(
            query_id=f"{split}-{i:06d}", text=text, image_paths=images, entity_keys=[eq], example_keys=[eh, et],
            row_digest=mars_row_digest(r),
            fields={"example": [eh, et], "question": eq, "answer": r["answer"], "relation": r["relation"],
                    "mode": int(r["mode"]), "example_entities": [id_of[eh], id_of[et]],
                    "question_entity": id_of[eq], "answer_entity": id_of[r["answer"]],
                    "image_paths": images, "image_entities": image_entities,
                    "example_labels": [label_of[eh], label_of[et]], "question_label": label_of[eq],
                    "answer_label": label_of[r["answer"]]}))
    space_file = file.parent / MARS_CANDIDATES
    answer_space = None
    if space_file.exists():
        ids = store.entity_ids([k for k in space_file.read_text().split() if k])
        answer_space = np.unique(ids[ids >= 0])
    train_file = file.parent / "train.json"
    return QuerySet("mars", split, queries, [file] + ([space_file] if space_file.exists() else []), MARS_FIELD_TYPES,
                    rejects, answer_space=answer_space, train_file=train_file if train_file.exists() else None)


def _mars_row(line: str) -> dict[str, Any]:
    """One MARS line, checked: {"example": [h, t], "question", "answer", "relation", "mode"}."""
    try:
        r = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadRecord(f"not a JSON object ({e})") from None
    if not isinstance(r, dict):
        raise BadRecord(f"not a JSON object (a {type(r).__name__})")
    missing = [k for k in ("example", "question", "answer", "relation", "mode") if k not in r]
    if missing:
        raise BadRecord(f"missing field(s) {', '.join(missing)}")
    ex = r["example"]
    if not (isinstance(ex, list) and len(ex) == 2 and all(isinstance(k, str) and k for k in ex)):
        raise BadRecord(f"'example' must be [head key, tail key], got {ex!r}"[:300])
    if not all(isinstance(r[k], str) and r[k] for k in ("question", "answer")):
        raise BadRecord("'question' and 'answer' must be entity keys")
    try:
        r["mode"] = int(r["mode"])
    except (TypeError, ValueError):
        raise BadRecord(f"'mode' must be an integer (0, 1, 2), got {r['mode']!r}"[:300]) from None
    return r


# ---- ScienceQA ---------------------------------------------------------------------------

_SQA_FIELDS = ("question", "choices", "answer", "hint", "subject", "grade", "topic", "category", "task",
               "lecture", "solution")


def scienceqa_text(problem: dict[str, Any]) -> str:
    """Question, context (hint) and lettered options, as the MR-MKG / MM-CoT prompts give them."""
    options = " ".join(f"({chr(65 + i)}) {c}" for i, c in enumerate(problem["choices"]))
    context = problem.get("hint") or ""
    text = f"Question: {problem['question']}"
    if context:
        text += f"\nContext: {context}"
    return f"{text}\nOptions: {options}"


def _problems_file(path: Path) -> Path:
    if path.is_file():
        return path
    for name in ("problems.json", "problems.subset150.json"):
        if (path / name).exists():
            return path / name
    raise KGStoreError(f"no problems.json in {path}")


@query_builders.register("scienceqa", "sqa")
def scienceqa_queries(path: Path, *, store: KGStore | None = None, split: str | None = None,
                      with_images: bool = False) -> QuerySet:
    """ScienceQA problems of one split (the `split` field; `all` for every problem).

    `image` keeps the problem's own field (the IMG category derives from it) and `image_path`
    the file when it is actually on disk (`images/<split>/<pid>/<image>`), else null.
    """
    file = _problems_file(path)
    try:
        # a regular file of bounded size (kg_store.safe_io): a FIFO or /dev/zero fails, never hangs
        problems: dict[str, dict[str, Any]] = json.loads(read_bounded(file, 1 << 30).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KGStoreError(f"{file}: not a ScienceQA problems JSON document ({e})") from None
    if not isinstance(problems, dict):
        raise KGStoreError(f"{file}: expected an object of problems keyed by pid")
    rejects: list[dict[str, Any]] = []
    split = split or "test"
    queries = []
    for pid, p in problems.items():
        if not isinstance(p, dict):
            rejects.append(reject(file, pid, json.dumps(p)[:1024], "problem is not a JSON object"))
            continue
        if split != "all" and p.get("split") != split:
            continue
        if not isinstance(p.get("question"), str) or not isinstance(p.get("choices"), list):
            rejects.append(reject(file, pid, json.dumps(p)[:1024], "problem lacks 'question' or 'choices'"))
            continue
        image_path = None
        if p.get("image"):
            try:
                image_path = query_image(file.parent / "images", f"{p.get('split')}/{pid}/{p['image']}")
            except BadRecord as e:
                if "missing-file" not in str(e):  # a missing image is normal (not shipped); escaping is not
                    rejects.append(reject(file, pid, json.dumps(p)[:1024], str(e)))
                    continue
        fields = {k: p.get(k) for k in _SQA_FIELDS}
        fields.update(image=p.get("image"), image_path=image_path, pid=pid)
        queries.append(Query(query_id=pid, text=scienceqa_text(p),
                             image_paths=[image_path] if with_images and image_path else [], fields=fields))
    if not queries:
        raise KGStoreError(f"no ScienceQA problem has split {split!r} in {file}")
    return QuerySet("scienceqa", split, queries, [file], SCIENCEQA_FIELD_TYPES, rejects)


# ---- generic JSONL -----------------------------------------------------------------------

@query_builders.register("jsonl")
def jsonl_queries(path: Path, *, store: KGStore | None = None, split: str | None = None,
                  with_images: bool = False) -> QuerySet:
    """One JSON object a line: {"id", "text", "image"?, "entities"?}; image relative to the file."""
    if path.is_dir():
        raise KGStoreError(f"jsonl: {path} is a directory, give the file")
    queries: list[Query] = []
    rejects: list[dict[str, Any]] = []
    for n, _, line in numbered_lines(path, rejects):
        try:
            obj = json.loads(line)
            qid, text = str(obj["id"]), str(obj["text"])
        except (json.JSONDecodeError, KeyError, TypeError, IndexError) as e:
            rejects.append(reject(path, n, line, f"not a {{'id','text',...}} JSON object ({type(e).__name__}: {e})"))
            continue
        if not qid or UNSAFE_CHARS.search(qid):  # an id names shard rows, predictions and terminal lines
            rejects.append(reject(path, n, line, "query id is empty or holds control characters"))
            continue
        try:
            image_path = (str(Path(query_image(path.parent, obj["image"], allow_absolute=True)).resolve())
                          if obj.get("image") else None)
        except BadRecord as e:
            rejects.append(reject(path, n, line, str(e)))
            continue
        queries.append(Query(query_id=qid, text=text,
                             image_paths=[image_path] if with_images and image_path else [],
                             entity_keys=[str(e) for e in obj.get("entities") or []],
                             fields={"image_path": image_path}))
    return QuerySet("jsonl", split or path.stem, queries, [path], {"image_path": pa.string()}, rejects)
