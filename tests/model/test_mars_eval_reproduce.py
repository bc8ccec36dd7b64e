"""benchmarks/mars_eval.py --reproduce: test ranks from the committed artifacts (the reranker's model
file and TransE weights in benchmarks/out/) equal the ranks in benchmarks/out/mars_eval.json."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["reranker", "memory>kg_prior"])
def test_reproduce_matches_the_committed_json(variant, data_dir, capsys):
    """Builds the benchmark's MarKG store with minilm vectors on first use (minutes), as the script does."""
    from benchmarks import mars_eval
    lines = [0, 5, 17, 400, 1361]
    mars_eval.main(["--data", str(data_dir), "--reproduce", ",".join(map(str, lines)), "--variant", variant])
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    published = json.loads((REPO / "benchmarks" / "out" / "mars_eval.json").read_text())["ranks"][variant]["test"]
    assert got == {str(i): published[str(i)] for i in lines}
