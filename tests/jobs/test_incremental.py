"""Issue 8: a rerun with nothing changed does no work; appending a small TSV source re-embeds only
what is new, appends to the indexes, reuses cached query vectors, and the final shards equal those
of a full rebuild on the combined input. Real MarKG triples, the real MiniLM encoder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmkg.kg_store import open_store
from mmkg.kg_store.shards import read_shards
from tests.jobs.test_run_fixtures import make_sources, pipeline_job as _pipeline_job

pytestmark = pytest.mark.faiss


def pipeline_job(*args, **kwargs):
    """The small pipeline, embedding triples too (the anchored retriever alone needs none): the
    incremental paths of every kind are what these tests check."""
    job = _pipeline_job(*args, **kwargs)
    job["embed"]["kinds"] = ["entity", "relation", "triple"]
    return job


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
    """base run → unchanged rerun → run with the extra TSV → full rebuild of base + TSV elsewhere."""
    from mmkg.jobs.runner import run_pipeline

    tmp = tmp_path_factory.mktemp("incremental")
    src = make_sources(data_dir, tmp / "src")
    base_sources = [f"markg:{src['base']}"]
    both = base_sources + [f"tsv:{src['extra']}"]
    kg = tmp / "kg"
    out = {"src": src, "kg": kg, "full_kg": tmp / "full"}
    out["first"] = run_pipeline(**pipeline_job(data_dir, kg, base_sources), progress=False)
    out["stages_after_first"] = len(open_store(kg).manifest["stages"])
    out["version_after_first"] = open_store(kg).kg_version
    out["rerun"] = run_pipeline(**pipeline_job(data_dir, kg, base_sources), progress=False)
    out["stages_after_rerun"] = len(open_store(kg).manifest["stages"])
    out["incremental"] = run_pipeline(**pipeline_job(data_dir, kg, both), progress=False)
    out["full"] = run_pipeline(**pipeline_job(data_dir, out["full_kg"], both), progress=False)
    return out


def _stage(report, name):
    return next(s for s in report.stages if s.name == name)


def test_rerun_with_no_change_is_all_cached(runs):
    rerun = runs["rerun"]
    assert [(s.name, s.status) for s in rerun.stages if s.name != "sparql"][:4] == [
        ("ingest", "cached"), ("embed", "cached"), ("index", "cached"), ("retrieve", "cached")]
    assert rerun.all_cached and rerun.status == "ok"
    # nothing was written: no new stage records, same KG version
    assert runs["stages_after_rerun"] == runs["stages_after_first"]
    assert rerun.kg_version_after == runs["version_after_first"]
    # a JSON run report and a log file exist for every run
    kg = runs["kg"]
    assert len(list((kg / "runs").glob("*.json"))) >= 2
    assert Path(rerun.log_file).exists()


def test_append_tsv_embeds_only_new_rows(runs):
    inc = runs["incremental"]
    ingest = _stage(inc, "ingest")
    assert ingest.status == "ran" and ingest.counts["sources_ingested"] == 1  # only the TSV was read
    added = {k: ingest.counts[f"{plural}_added"] for k, plural in
             (("entity", "entities"), ("relation", "relations"), ("triple", "triples"))}
    assert added["triple"] > 0 and added["entity"] > 0
    embed = _stage(inc, "embed")
    assert embed.status == "ran"
    for kind in ("entity", "relation", "triple"):
        assert embed.counts[f"{kind}_encoded"] == added[kind], kind
    first_embed = _stage(runs["first"], "embed").counts
    assert embed.counts["triple_reused"] == first_embed["triple_encoded"] == runs["src"]["n_base"]
    # the indexes (exact Flat at this size) were appended to, not rebuilt
    index = _stage(inc, "index")
    assert index.counts["triple_appended"] == added["triple"]
    assert all(v.startswith("append") for v in index.outputs.values())
    retrieve = _stage(inc, "retrieve")
    # the KG changed, so the shard set is retrieved again, but no query text is encoded again
    assert retrieve.counts["queries_recomputed"] == retrieve.counts["queries"] > 0
    assert retrieve.counts["query_vectors_cached"] == retrieve.counts["queries"]
    assert retrieve.counts["query_vectors_encoded"] == 0


def test_incremental_shards_equal_full_rebuild(runs):
    inc, full = open_store(runs["kg"]), open_store(runs["full_kg"])
    for table in ("entities", "relations", "triples"):
        assert inc.table(table).drop_columns(["source"]).equals(full.table(table).drop_columns(["source"])), table
    inc_dirs = _stage(runs["incremental"], "retrieve").outputs
    full_dirs = _stage(runs["full"], "retrieve").outputs
    assert inc_dirs.keys() == full_dirs.keys() and len(inc_dirs) == 2
    for key in inc_dirs:
        a, b = read_shards(inc_dirs[key]), read_shards(full_dirs[key])
        assert a.column_names == b.column_names and a.num_rows == b.num_rows > 0
        for col in a.column_names:
            if col == "scores":
                # MiniLM vectors differ in the last float32 bits with batch composition
                x = np.concatenate([np.asarray(v, np.float32) for v in a[col].to_pylist()])
                y = np.concatenate([np.asarray(v, np.float32) for v in b[col].to_pylist()])
                np.testing.assert_allclose(x, y, atol=1e-5)
            else:
                assert a[col].to_pylist() == b[col].to_pylist(), (key, col)


def test_config_change_reruns_only_downstream(runs, data_dir):
    """Changing the retrieval N reruns retrieve only; the plan (--dry-run) says so first."""
    from mmkg.jobs.runner import run_pipeline
    job = pipeline_job(data_dir, runs["kg"], [f"markg:{runs['src']['base']}", f"tsv:{runs['src']['extra']}"])
    job["retrieve"]["top_N"] = 5
    plan = run_pipeline(**job, dry_run=True, progress=False)
    assert [(s.name, s.status) for s in plan.stages if s.name != "sparql"][:4] == [
        ("ingest", "cached"), ("embed", "cached"), ("index", "cached"), ("retrieve", "planned")]
    report = run_pipeline(**job, progress=False)
    assert [s.status for s in report.stages if s.name != "sparql"][:4] == ["cached", "cached", "cached", "ran"]
    for d in _stage(report, "retrieve").outputs.values():
        assert all(len(x) <= 5 for x in read_shards(d)["triple_ids"].to_pylist())


def test_ivf_index_is_appended_and_rechecked(runs, data_dir, tmp_path):
    """An IVF index takes new vectors without retraining (and re-runs its recall self-check)."""
    from mmkg.jobs.runner import run_pipeline
    from mmkg.retrieval.index import load_index
    sources = [f"markg:{runs['src']['base']}", f"tsv:{runs['src']['extra']}"]
    job = pipeline_job(data_dir, runs["kg"], sources)
    job["index"] = {"kind": "ivf"}
    first = run_pipeline(**job, only="index", progress=False)
    index = _stage(first, "index")
    assert index.status == "ran" and all(v.startswith("rebuild") for v in index.outputs.values())
    more = tmp_path / "more.tsv"
    more.write_text("http://example.org/entity/Lake_Zzyzx\tP17\thttp://example.org/entity/Mojave_Zzyzx\n")
    job["ingest"]["sources"] = sources + [f"tsv:{more}"]
    report = run_pipeline(**job, progress=False)
    index = _stage(report, "index")
    assert index.outputs["triple"].startswith("append") and index.counts["triple_appended"] == 1
    vi = load_index(open_store(runs["kg"]), "minilm", "triple")
    assert vi.meta["type"] == "ivf" and vi.ntotal == open_store(runs["kg"]).count("triples")
    assert vi.meta["self_check"]["recall"] > 0


def test_old_version_readable_until_gc(runs, capsys):
    from mmkg.kg_store.gc import collect_garbage
    from mmkg.kg_store.versions import open_version
    kg = runs["kg"]
    old = open_version(kg, runs["version_after_first"])
    assert old.count("triples") == runs["src"]["n_base"]
    assert old.triples_array().shape == (runs["src"]["n_base"], 3)
    n_versions = len(list((kg / "versions").glob("v*.json")))
    dry = collect_garbage(kg, keep=n_versions, dry_run=True)
    # every version kept: at most kept copies (objects/) of states that no version ended with go,
    # e.g. the flat index a rebuild to ivf replaced within one version
    assert all(rel.startswith("objects/") for rel, _ in dry["deleted"]), dry["deleted"]
    from mmkg.jobs.cli import main
    with pytest.raises(SystemExit) as e:  # the CLI's dry run lists each file that would go, with its bytes
        main(["gc", "--kg", str(kg), "--keep", "1", "--dry-run"])
    assert e.value.code == 0
    listed = collect_garbage(kg, keep=1, dry_run=True)["deleted"]
    out = capsys.readouterr().out
    assert listed and all(f"  {rel}  {size:,} bytes" in out for rel, size in listed)
    assert all((kg / rel).stat().st_size == size for rel, size in listed)  # nothing deleted yet
    gone = collect_garbage(kg, keep=1)
    assert sorted(gone["files"]) == sorted(rel for rel, _ in listed)[:50]
    assert gone["files_deleted"] > 0 and any(f.startswith("tables/") for f in gone["files"])
    assert open_store(kg).verify() == []  # the current version is intact
    with pytest.raises(Exception):
        open_version(kg, runs["version_after_first"]).table("triples")


def test_a_changed_dataset_file_reruns_retrieve(runs, data_dir, tmp_path):
    """Issue 26: changing any file the dataset is defined by (the split file, the candidate file
    `analogy_entities.txt`, the images folder, the prior's train file) makes `mmkg run --only
    retrieve` recompute: the DAG's fingerprint and the shard cache key both hold every file."""
    import shutil
    from mmkg.jobs.runner import run_pipeline
    mars = tmp_path / "MARS"
    mars.mkdir()
    src = data_dir / "markg/MARS"
    shutil.copy(src / "dev.json", mars / "dev.json")
    shutil.copy(src / "analogy_entities.txt", mars / "analogy_entities.txt")
    rows = (src / "train.json").read_text().splitlines()
    (mars / "train.json").write_text("\n".join(rows[:200]) + "\n")  # a small prior: the test stays fast
    shutil.copytree(src / "images", mars / "images")
    job = pipeline_job(data_dir, runs["kg"], [f"markg:{runs['src']['base']}", f"tsv:{runs['src']['extra']}"])
    job["retrieve"]["datasets"] = [{"dataset": f"mars:{mars}", "split": "dev", "limit": 3}]

    def retrieve(dry_run: bool = False):
        report = run_pipeline(**job, only="retrieve", dry_run=dry_run, progress=False)
        return _stage(report, "retrieve")

    first = retrieve()
    assert first.status == "ran" and retrieve(dry_run=True).status == "cached"
    first_dirs = set(first.outputs.values())
    image = mars / "images/Q1501/00000000.jpg"  # sorts first: the entity's image is now this one
    saved = {f: f.read_bytes() for f in (mars / "dev.json", mars / "analogy_entities.txt", mars / "train.json")}
    changes = {  # each alone, undone before the next: every one must be seen by itself
        "split file": (lambda: (mars / "dev.json").write_text((mars / "dev.json").read_text() + "\n"), None),
        "analogy_entities.txt": (lambda: (mars / "analogy_entities.txt").write_text(
            "\n".join((mars / "analogy_entities.txt").read_text().split()[:-1]) + "\n"), None),
        "images mapping": (lambda: shutil.copy(mars / "images/Q1501/02009001.jpg", image), image.unlink),
        "train.json": (lambda: (mars / "train.json").write_text("\n".join(rows[:150]) + "\n"), None),
    }
    for what, (change, undo) in changes.items():
        change()
        plan = retrieve(dry_run=True)
        assert plan.status == "planned" and "inputs changed" in plan.reason, what
        if undo is not None:
            undo()
        for f, data in saved.items():
            f.write_bytes(data)
        assert retrieve(dry_run=True).status == "cached", what
    change, _ = changes["images mapping"]
    change()
    again = retrieve()
    # the shard cache missed too: the set is rebuilt, its rows kept where a query's own inputs did not
    # change (a text encoder reads no image: all 3 are kept, byte-identical to a full retrieve)
    assert again.status == "ran" and again.counts["queries"] == 3 and again.counts["queries_reused"] == 3
    assert set(again.outputs.values()) == first_dirs  # same dataset folder: its shard set is replaced
    assert retrieve(dry_run=True).status == "cached"
