#!/usr/bin/env python3
"""The trace table's key order, side by side (docs/benchmarks.md).

Writes the same rows the way the trace ingest does (2,560 rows a
transaction, WAL, synchronous=FULL, ON CONFLICT DO NOTHING) into three
layouts of the trace table, each already holding 600,000 rows: schema 3's
(key led by message id, plus an index by time) and schema 4's (key led by
time, partial indexes by message id), with and without a rowid. Three
rounds alternating; medians. Python's own sqlite3, nothing to install:

    python3 benches/trace_key/bench.py
"""
import os, shutil, sqlite3, tempfile, time, uuid
WORK = tempfile.mkdtemp(prefix='mqaudit-trace-key-')
N=300_000
def rows(n, t0):
    out=[]
    for i in range(n):
        mid=uuid.uuid4().hex.upper()
        side = 'pub' if i%2==0 else 'sub'
        out.append(('flow-a','rocketmq_trace',side,mid,'order-%d'%i,t0+i//10,'0A00000100002A9F00000000%08X'%i,'127.0.0.1:10911','TagA',1,0,0,None,0))
    return out
schemas={
 'schema 3: message id first':["CREATE TABLE trace (flow TEXT NOT NULL, source TEXT NOT NULL, side TEXT NOT NULL, msg_id TEXT NOT NULL, keys TEXT NOT NULL, time_ms INTEGER NOT NULL, offset_msg_id TEXT, store_host TEXT, tags TEXT, success INTEGER NOT NULL, msg_type INTEGER NOT NULL, reconsume INTEGER NOT NULL, tx_state TEXT, batch INTEGER NOT NULL, PRIMARY KEY (flow, side, msg_id, time_ms, keys, source))",
   "CREATE INDEX trace_by_time ON trace (flow, side, time_ms)"],
 'time first, without rowid':["CREATE TABLE trace (flow TEXT NOT NULL, source TEXT NOT NULL, side TEXT NOT NULL, msg_id TEXT NOT NULL, keys TEXT NOT NULL, time_ms INTEGER NOT NULL, offset_msg_id TEXT, store_host TEXT, tags TEXT, success INTEGER NOT NULL, msg_type INTEGER NOT NULL, reconsume INTEGER NOT NULL, tx_state TEXT, batch INTEGER NOT NULL, PRIMARY KEY (flow, side, time_ms, msg_id, keys, source)) WITHOUT ROWID",
   "CREATE INDEX trace_tx_by_msg_id ON trace (flow, msg_id) WHERE side = 'tx'",
   "CREATE INDEX trace_failed_by_msg_id ON trace (flow, msg_id) WHERE success = 0"],
 'schema 4: time first':["CREATE TABLE trace (flow TEXT NOT NULL, source TEXT NOT NULL, side TEXT NOT NULL, msg_id TEXT NOT NULL, keys TEXT NOT NULL, time_ms INTEGER NOT NULL, offset_msg_id TEXT, store_host TEXT, tags TEXT, success INTEGER NOT NULL, msg_type INTEGER NOT NULL, reconsume INTEGER NOT NULL, tx_state TEXT, batch INTEGER NOT NULL, PRIMARY KEY (flow, side, time_ms, msg_id, keys, source))",
   "CREATE INDEX trace_tx_by_msg_id ON trace (flow, msg_id) WHERE side = 'tx'",
   "CREATE INDEX trace_failed_by_msg_id ON trace (flow, msg_id) WHERE success = 0"],
}
res={k:[] for k in schemas}
for rnd in range(3):
  for name, ddl in schemas.items():
    p=os.path.join(WORK, '%d.db' % list(schemas).index(name))
    for f in [p,p+'-wal',p+'-shm']:
        if os.path.exists(f): os.remove(f)
    c=sqlite3.connect(p, isolation_level=None)
    c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA synchronous=FULL')
    for d in ddl: c.execute(d)
    # A populated store: 600,000 rows already there.
    t0=1_800_000_000_000
    pre=rows(600_000, t0)
    c.execute('BEGIN'); c.executemany('INSERT INTO trace (flow,source,side,msg_id,keys,time_ms,offset_msg_id,store_host,tags,success,msg_type,reconsume,tx_state,batch) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING', pre); c.execute('COMMIT')
    new=rows(N, t0+60_000_000)
    st=time.time()
    for i in range(0,N,2560):
        c.execute('BEGIN'); c.executemany('INSERT INTO trace (flow,source,side,msg_id,keys,time_ms,offset_msg_id,store_host,tags,success,msg_type,reconsume,tx_state,batch) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING', new[i:i+2560]); c.execute('COMMIT')
    res[name].append(time.time()-st)
    c.close()
for k,v in res.items():
    v.sort(); print(k, 'median %.2f s for %d rows (%.0f rows/s)'%(v[1],N,N/v[1]))
shutil.rmtree(WORK)
