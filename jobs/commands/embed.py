"""`mmkg embed`, `mmkg index`, `mmkg search`: vectors, FAISS indexes and nearest-neighbour lookups."""
from __future__ import annotations

import json

import click

KG_OPTION = click.option("--kg", required=True, type=click.Path(file_okay=False, exists=True), help="KG directory.")
ENCODER_OPTION = click.option("--encoder", required=True,
                              help="open_clip:<model>[:<pretrained>] | minilm | tiny-clip")


@click.command()
@KG_OPTION
@ENCODER_OPTION
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--device", default="cpu", show_default=True,
              help="auto (CUDA when present) | cpu | cuda[:N]; cuda without CUDA is an error, never a CPU run.")
@click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="Storage dtype of the vector matrices.")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="torch / ONNX Runtime threads (default: all cores).")
@click.option("--runtime", type=click.Choice(["auto", "torch", "onnx"]), default="auto", show_default=True,
              help="Encoder runtime: auto = ONNX Runtime on the CPU where its graph matches torch, else torch.")
@click.option("--precision", type=click.Choice(["auto", "float32", "float16", "bfloat16", "int8"]), default="auto",
              show_default=True, help="Encoder numerics: auto = float32 (ONNX on the CPU, float16 torch on CUDA); "
                                      "float32/float16/bfloat16 with --runtime auto run torch; int8 (ONNX, dynamic) "
                                      "is faster but approximate, and prints its probe quality.")
@click.option("--chunk-size", type=click.IntRange(1), default=8192, show_default=True,
              help="Rows per resumable chunk.")
@click.option("--spark-master", default=None, help="Spark master URL (engine spark; default local[*]).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--limit", type=click.IntRange(1), default=None, hidden=True, help="Only the first N rows per kind.")
@click.option("--kinds", default=None,
              help="Comma-separated vector kinds to embed (entity,relation,triple,image; default: all). "
                   "The anchored retriever needs no triple vectors; `mmkg search --what triples` embeds them "
                   "when missing.")
def embed(kg: str, encoder: str, engine: str, batch_size: int, device: str, dtype: str, threads: int | None,
          runtime: str, precision: str, chunk_size: int, spark_master: str | None, no_progress: bool,
          limit: int | None, kinds: str | None) -> None:
    """Embed entities, relations, triples and images; resumable per chunk after a kill."""
    from mmkg.pipeline.device import resolve_device
    from mmkg.pipeline.embed import check_kinds, embed_store
    wanted = check_kinds([k.strip() for k in kinds.split(",") if k.strip()]) if kinds is not None else None
    resolve_device(device)  # a device this machine lacks fails now, in one line, before any work
    res = embed_store(kg, encoder, engine=engine, batch_size=batch_size, device=device, dtype=dtype,
                      precision=precision, runtime=runtime, threads=threads, chunk_size=chunk_size, limit=limit,
                      spark_master=spark_master, progress=not no_progress, kinds=wanted)
    meta = res.meta
    info = meta.get("encoder_info", {})
    counts = ", ".join(f"{k} {v['count']:,}" for k, v in meta["kinds"].items())
    click.echo(f"vectors/{meta['slug']}: {counts} (dim {meta['dim']}, {meta['dtype']}, {meta['seconds']:.1f}s "
               f"on {meta.get('device', device)}, {info.get('runtime', '')} "
               f"{str(info.get('precision', '')).removeprefix('onnx-')}; "
               f"{res.forwarded:,} texts/images encoded, {res.cache_hits:,} rows from the vector cache)")


@click.command()
@KG_OPTION
@ENCODER_OPTION
@click.option("--kind", type=click.Choice(["auto", "flat", "ivf", "hnsw", "ivfpq"]), default="auto", show_default=True)
@click.option("--max-memory", default=None, help="Memory budget per index, e.g. 512M, 4G (auto picks codes to fit).")
@click.option("--target-recall", type=click.FloatRange(0, 1), default=0.95, show_default=True,
              help="recall@10 the nprobe/efSearch tuning aims for.")
@click.option("--threads", type=click.IntRange(1), default=None, help="faiss OpenMP threads.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Build on the GPU: auto = when FAISS has one (faiss-gpu); cuda without one is an error.")
@click.option("--json", "as_json", is_flag=True, help="Print the index meta as JSON.")
def index(kg: str, encoder: str, kind: str, max_memory: str | None, target_recall: float, threads: int | None,
          device: str, as_json: bool) -> None:
    """Build FAISS inner-product indexes for entity, triple and image vectors."""
    from mmkg.retrieval.index import build_store_indexes
    res = build_store_indexes(kg, encoder, kind=kind, max_memory=max_memory, target_recall=target_recall,
                              threads=threads, use_gpu=device)
    meta = res.meta
    if as_json:
        click.echo(json.dumps(meta, sort_keys=True))
        return
    for vkind, m in meta["kinds"].items():
        check = m.get("self_check", {})
        click.echo(f"{vkind:>8}: {m['factory']} ntotal={m['ntotal']:,} params={m['params']} "
                   f"recall@{check.get('k', 10)}={check.get('recall')} ({res.decisions[vkind]})")


@click.command()
@KG_OPTION
@ENCODER_OPTION
@click.option("--text", default=None, help="Query text.")
@click.option("--image", type=click.Path(dir_okay=False, exists=True), default=None, help="Query image file.")
@click.option("--what", type=click.Choice(["entities", "triples", "images"]), default="entities", show_default=True)
@click.option("--k", type=click.IntRange(1), default=10, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="Query encoder: auto | cpu | cuda[:N].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def search(kg: str, encoder: str, text: str | None, image: str | None, what: str, k: int, device: str,
           as_json: bool) -> None:
    """Nearest entities/triples/images to a text or an image."""
    if (text is None) == (image is None):
        raise click.UsageError("give exactly one of --text or --image")
    from mmkg.retrieval.index_search import search_store
    if device.strip().lower() != "cpu":  # the CPU needs no check, and no torch import (ONNX query path)
        from mmkg.pipeline.device import resolve_device
        resolve_device(device)
    result = search_store(kg, encoder, text=text, image=image, what=what, k=k, device=device)
    from mmkg.jobs.terminal import printable, safe_json
    if as_json:
        click.echo(safe_json(result))
        return
    for hit in result["hits"]:  # keys and labels come from input files: escaped (mmkg.jobs.terminal)
        click.echo(f"{hit['rank']:>3}  {hit['score']:.4f}  {hit['id']:>8}  {printable(hit.get('key', ''))}  "
                   f"{printable(hit['label'])}")


commands = [embed, index, search]
