"""spark-submit entry point for ingestion (the master comes from spark-submit or --master).

    spark-submit --master spark://host:7077 pipeline/engines/spark_submit.py \\
        --kg /data/kg --source markg:/data/MarKG --source mmkg:/data/DB15K_EntityTriples.txt

Input paths must be readable by the executors (a shared filesystem); the store is written by the
driver. Prints one JSON summary line; exit code 0 ok, 1 failure, 3 rejects under --strict.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    if __package__ in (None, ""):  # run as a file by spark-submit: make the repo importable
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from kg_store.errors import ConfigError, MMKGError
    from pipeline.ingest import IngestRejectedError, ingest

    ap = argparse.ArgumentParser(prog="spark_submit.py", description="Ingest sources into a KG store with Spark.")
    ap.add_argument("--kg", required=True)
    ap.add_argument("--source", action="append", required=True, metavar="FORMAT:PATH")
    ap.add_argument("--master", default=None, help="only when not given to spark-submit")
    ap.add_argument("--shuffle-partitions", type=int, default=None)
    ap.add_argument("--strict", action="store_true")
    args = ap.parse_args(argv)
    try:
        r = ingest(args.kg, args.source, engine="spark", master=args.master,
                   shuffle_partitions=args.shuffle_partitions, strict=args.strict)
    except IngestRejectedError as e:
        print(f"spark_submit: {e}", file=sys.stderr)
        return 3
    except ConfigError as e:  # a usage error, as `mmkg` reports it
        print(f"spark_submit: {e}", file=sys.stderr)
        return 2
    except MMKGError as e:
        print(f"spark_submit: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"kg_version": r.store.kg_version, "counts": r.counts, "seconds": r.seconds}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
