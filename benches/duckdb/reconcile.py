"""The reconcile benchmark's DuckDB leg (run by benches/reconcile.rs in its
own virtual environment): the same keys as mqaudit's reconciler gets, the
same group-by join (missing, duplicated) and orphan anti-join, on every core.
Prints one JSON object."""
import json
import os
import sys
import time

import duckdb

n = int(sys.argv[1])
con = duckdb.connect()
threads = os.cpu_count()
con.execute(f"SET threads = {threads}")
key = "'order-' || lpad(i::VARCHAR, 9, '0')"
load = time.perf_counter()
con.execute(f"CREATE TABLE produced AS SELECT {key} AS key FROM range(0, {n}) t(i)")
# Every key once but i % 1000 == 7; i % 1000 == 3 twice.
con.execute(
    f"CREATE TABLE consumed AS SELECT {key} AS key FROM range(0, {n}) t(i) WHERE i % 1000 <> 7 "
    f"UNION ALL SELECT {key} FROM range(0, {n}) t(i) WHERE i % 1000 = 3"
)
loaded = time.perf_counter() - load
started = time.perf_counter()
missing, duplicated = con.execute(
    "SELECT count(*) FILTER (WHERE p.n > COALESCE(c.n, 0)), "
    "       count(*) FILTER (WHERE COALESCE(c.n, 0) > p.n) "
    "FROM (SELECT key, count(*) AS n FROM produced GROUP BY key) p "
    "LEFT JOIN (SELECT key, count(*) AS n FROM consumed GROUP BY key) c USING (key)"
).fetchone()
group_by = time.perf_counter() - started
(orphans,) = con.execute(
    "SELECT count(*) FROM consumed c WHERE NOT EXISTS (SELECT 1 FROM produced p WHERE p.key = c.key)"
).fetchone()
total = time.perf_counter() - started
print(json.dumps({
    "version": duckdb.__version__,
    "threads": threads,
    "loaded": loaded,
    "group_by": group_by,
    "total": total,
    "missing": missing,
    "duplicated": duplicated,
    "orphans": orphans,
}))
