"""`mmkg sql` (issue 30): DuckDB over the committed Parquet parts, on the real MarKG store with images."""
from __future__ import annotations

import json

import pyarrow as pa
import pytest
from click.testing import CliRunner

from mmkg.jobs.cli import cli
from tests.jobs.analyst_fixtures import markg_images_kg


@pytest.fixture(scope="module")
def kg(data_dir, tmp_path_factory):
    return str(markg_images_kg(data_dir, tmp_path_factory))


def run(*args: str, code: int = 0) -> tuple[str, str]:
    """(stdout, the error line): errors reach `mmkg.jobs.cli.main` as exceptions, which prints their text."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, result.output + result.stderr
    return result.stdout, str(result.exception) if result.exception else result.stderr


def sql_json(kg: str, query: str, *extra: str) -> dict:
    return json.loads(run("sql", "--kg", kg, "--format", "json", *extra, query)[0])


def test_sql_counts_equal_stats(kg):
    stats = json.loads(run("stats", "--kg", kg, "--json")[0])
    names = ("entities", "relations", "triples", "literals", "same_as", "images", "rejects")
    q = " UNION ALL ".join(f"SELECT '{n}' AS name, count(*) AS n FROM {n}" for n in names)
    counts = {r["name"]: r["n"] for r in sql_json(kg, q)["rows"]}
    assert counts == {n: stats[n] for n in names} and counts["triples"] == 33_301
    rel = sql_json(kg, "SELECT relation_key AS key, relation_label AS label, count(*) AS count FROM triples "
                       "GROUP BY ALL ORDER BY count DESC, key LIMIT 5")["rows"]
    assert rel == stats["relation_frequency"][:5]
    with_images = sql_json(kg, "SELECT count(DISTINCT entity_id) AS n FROM images")["rows"][0]["n"]
    assert with_images == stats["image_coverage"]["entities_with_images"]


def test_views_join_labels_and_outputs(kg, tmp_path):
    rows = sql_json(kg, "SELECT relation_label, tail_label FROM triples WHERE head_key = 'Q32789' ORDER BY 1")["rows"]
    assert len(rows) == 7 and {"relation_label": "parent taxon", "tail_label": "Equus"} in rows
    out, _ = run("sql", "--kg", kg, "--format", "csv", "SELECT key, label FROM entities WHERE key = 'Q32789'")
    assert out.splitlines() == ['"key","label"', '"Q32789","zebra"']
    page = sql_json(kg, "SELECT id FROM entities", "--max-rows", "3")
    assert len(page["rows"]) == 3 and page["more"] is True
    run("sql", "--kg", kg, "--format", "arrow", "--out", str(tmp_path / "img.arrow"),
        "SELECT entity_key, sha256 FROM images WHERE entity_label = 'zebra'")
    with pa.memory_map(str(tmp_path / "img.arrow")) as f:
        table = pa.ipc.open_file(f).read_all()
    assert table.num_rows == 1 and len(table["sha256"][0].as_py()) == 64
    table_out, _ = run("sql", "--kg", kg, "SELECT count(*) AS n FROM same_as")
    assert "(1 rows)" in table_out


def test_sql_reads_nothing_but_the_views_and_is_bounded(kg, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    for q in (f"SELECT * FROM read_csv('{secret}')", f"COPY entities TO '{tmp_path / 'leak.csv'}'",
              "SET enable_external_access = true", "INSTALL httpfs"):
        _, err = run("sql", "--kg", kg, q, code=1)
        assert err.startswith("SQL error") and ("disabled" in err or "locked" in err), err
    assert not (tmp_path / "leak.csv").exists()
    _, err = run("sql", "--kg", kg, "--timeout", "1", "SELECT count(*) FROM triples a, triples b, triples c", code=1)
    assert "timeout" in err and len(err.strip().splitlines()) == 1
