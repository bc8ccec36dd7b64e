"""ScienceQA (multiple-choice science questions): queries of one split of `problems.json`, and
leakage (problems whose image bytes or question text also occur in train)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mmkg.kg_store import KGStore
from mmkg.kg_store.errors import KGStoreError
from mmkg.kg_store.hashing import sha256_file
from mmkg.kg_store.safe_io import read_bounded
from mmkg.retrieval.datasets.base import Dataset, Query, QuerySet, datasets, tree_files
from mmkg.retrieval.query_rejects import BadRecord, query_image, reject
from mmkg.retrieval.summaries import flag_summary

_strs = pa.list_(pa.string())
SCIENCEQA_FIELD_TYPES = {"question": pa.string(), "choices": _strs, "answer": pa.int64(), "hint": pa.string(),
                         "subject": pa.string(), "grade": pa.string(), "topic": pa.string(),
                         "category": pa.string(), "task": pa.string(), "lecture": pa.string(),
                         "solution": pa.string(), "image": pa.string(), "image_path": pa.string(),
                         "pid": pa.string()}
_SQA_FIELDS = ("question", "choices", "answer", "hint", "subject", "grade", "topic", "category", "task",
               "lecture", "solution")
#: every split of the problems file (`--split all`)
ALL_SPLITS = "all"


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


@datasets.register("scienceqa", "sqa")
class ScienceQADataset(Dataset):
    """`problems.json` (or the subset file) with `images/<split>/<pid>/<image>` beside it."""

    name = "scienceqa"
    train_split, fit_split, eval_split = "train", "val", "test"
    field_types = SCIENCEQA_FIELD_TYPES
    has_leakage = True

    def defining_files(self, split: str | None) -> list[Path]:
        # the problems, and the images of this split (its image_path fields) and of train (leakage)
        file = _problems_file(self.path)
        split = split or self.eval_split
        images = file.parent / "images"
        folders = [images] if split == ALL_SPLITS else [images / s for s in sorted({split, self.train_split})]
        return sorted({file, *(f for d in folders for f in tree_files(d))})

    def queries(self, *, store: KGStore | None = None, split: str | None = None,
                with_images: bool = False) -> QuerySet:
        """The problems of one split (the `split` field; `all` for every problem).

        `image` keeps the problem's own field (the IMG category derives from it) and `image_path`
        the file when it is actually on disk (`images/<split>/<pid>/<image>`), else null.
        """
        file = _problems_file(self.path)
        try:
            # a regular file of bounded size (mmkg.kg_store.safe_io): a FIFO or /dev/zero fails, never hangs
            problems: dict[str, dict[str, Any]] = json.loads(read_bounded(file, 1 << 30).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise KGStoreError(f"{file}: not a ScienceQA problems JSON document ({e})") from None
        if not isinstance(problems, dict):
            raise KGStoreError(f"{file}: expected an object of problems keyed by pid")
        rejects: list[dict[str, Any]] = []
        split = split or self.eval_split
        queries = []
        for pid, p in problems.items():
            if not isinstance(p, dict):
                rejects.append(reject(file, pid, json.dumps(p)[:1024], "problem is not a JSON object"))
                continue
            if split != ALL_SPLITS and p.get("split") != split:
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
        return QuerySet(self.name, split, queries, [file], SCIENCEQA_FIELD_TYPES, rejects)

    @classmethod
    def run_leakage(cls, store: KGStore, qs: QuerySet, s: Any) -> tuple[dict[str, Any] | None, None]:
        return scienceqa_leakage(qs), None

    def leakage(self, store: KGStore, qs: QuerySet) -> dict[str, Any]:
        return scienceqa_leakage(qs)


_WS = re.compile(r"\s+")


def _norm_text(s: str) -> str:
    return _WS.sub(" ", s.strip().lower())


def scienceqa_leakage(qs: QuerySet) -> dict[str, Any]:
    """Problems of this split whose image bytes (sha256) or question text also occur in train."""
    problems = json.loads(qs.source_files[0].read_text())
    root = qs.source_files[0].parent
    train_split = ScienceQADataset.train_split
    train = {pid: p for pid, p in problems.items() if p.get("split") == train_split}

    def image_sha(pid: str, p: dict[str, Any]) -> str | None:
        if not p.get("image"):
            return None
        f = root / "images" / str(p.get("split")) / pid / p["image"]
        return sha256_file(f) if f.exists() else None

    train_texts = {_norm_text(p["question"]) for p in train.values()}
    train_full = {(_norm_text(p["question"]), tuple(p["choices"])) for p in train.values()}
    train_images = {s for pid, p in train.items() if (s := image_sha(pid, p))}
    pids = [q.query_id for q in qs.queries]
    rows = [problems[pid] for pid in pids]
    flags = {
        "question_text_in_train": np.array([_norm_text(p["question"]) in train_texts for p in rows], bool),
        "question_and_choices_in_train": np.array(
            [(_norm_text(p["question"]), tuple(p["choices"])) in train_full for p in rows], bool),
        "image_sha256_in_train": np.array([(s := image_sha(pid, p)) is not None and s in train_images
                                           for pid, p in zip(pids, rows)], bool),
    }
    report = {"dataset": qs.dataset, "split": qs.split,
              "images_on_disk": {"train": len(train_images),
                                 "this_split": sum(image_sha(pid, p) is not None for pid, p in zip(pids, rows))},
              **flag_summary(pids, flags)}
    if qs.split == train_split:
        report["note"] = "split is train itself: every flag is trivially true"
    return report
