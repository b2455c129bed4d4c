#!/usr/bin/env bash
# Quick start: build mqaudit, start a local RocketMQ test cluster, run a
# workload (keyed messages, a healthy, a lagging and a failing group), and
# serve metrics with config/quickstart.toml. Ctrl-C stops everything it started.
#
#   scripts/quickstart.sh [--broker rust|java4|java5]   run until Ctrl-C
#   scripts/quickstart.sh --check [--broker F]          verify the metrics, then stop (scripts/test.sh)
#
# --broker chooses the RocketMQ it starts (scripts/rocketmq-cluster.sh):
# rocketmq-rust (the default), Apache RocketMQ 4.9.8 or 5.3.3 (Java).
# Environment: MQAUDIT_QUICKSTART_LISTEN (default 127.0.0.1:9857).
set -euo pipefail
cd "$(dirname "$0")/.."

CHECK=0
BROKER=rust
while (($#)); do
  case $1 in
    --check) CHECK=1; shift ;;
    --broker) [[ $# -ge 2 ]] || { echo "--broker needs rust, java4 or java5" >&2; exit 64; }; BROKER=$2; shift 2 ;;
    --broker=*) BROKER=${1#--broker=}; shift ;;
    *) sed -n '2,12p' "$0" >&2; exit 64 ;;
  esac
done
case $BROKER in rust|java4|java5) ;; *) echo "unknown broker '$BROKER' (rust, java4, java5)" >&2; exit 64 ;; esac
LISTEN=${MQAUDIT_QUICKSTART_LISTEN:-127.0.0.1:9857}
log() { printf '[quickstart] %s\n' "$*" >&2; }

log "building mqaudit (release)"
cargo build --release --quiet --bin mqaudit --example workload

DIR=$(mktemp -d "${TMPDIR:-/tmp}/mqaudit-quickstart.XXXXXX")
SERVE_PID=
cleanup() {
  trap - EXIT INT TERM HUP
  # Whatever happened to our output (`| tee log` then Ctrl-C closes the
  # pipe), the cleanup must run to the end: a write to a closed pipe fails
  # instead of killing us, and no failure stops it.
  trap '' PIPE
  set +e
  if [[ -n $SERVE_PID ]] && kill -0 "$SERVE_PID" 2>/dev/null; then
    kill -TERM "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
  fi
  scripts/rocketmq-cluster.sh down "$DIR" >/dev/null 2>&1 || true
  rm -rf "$DIR"
  log "stopped mqaudit and the cluster" 2>/dev/null
}
# A signal's trap must end the script: bash resumes after a trap that
# returns, and the rest of the script (kill and restart broker-b) would
# then run against the cluster cleanup just stopped, leaving a node behind.
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap 'cleanup; exit 129' HUP

log "starting the RocketMQ test cluster ($BROKER) in $DIR"
scripts/rocketmq-cluster.sh up "$DIR" --broker "$BROKER" >/dev/null
# shellcheck disable=SC1091
source "$DIR/cluster.env"

log "running the workload"
target/release/examples/workload "$DIR/cluster.env" 200 | tee "$DIR/workload.out" | grep -v '^\(expect\|audit-\)' >&2

# mqaudit's config: the quick start's, plus the audited flow over the ledgers.
cat config/quickstart.toml - >"$DIR/mqaudit.toml" <<EOF

[audit]
data_dir = "$DIR/audit"

# The loss audit of the workload's quickstart-audited topic: the producer
# ledger (outbox) against the consumer ledger (consume log), every 5 s,
# 10 s windows, lost 20 s after a window ends.
[[flow]]
name = "orders"
cluster = "MqauditTest"
topic = "quickstart-audited"
group = "quickstart-audit"
schedule = "*/5 * * * * *"
window_seconds = 10
settle_seconds = 0
deadline_seconds = 20
produced = { kind = "jsonl", path = "$DIR/ledger/produced.jsonl" }
consumed = { kind = "jsonl", path = "$DIR/ledger/consumed.jsonl" }
EOF

log "starting mqaudit serve on $LISTEN"
target/release/mqaudit serve --config "$DIR/mqaudit.toml" --namesrv "$NAMESRV_ADDR" \
  --web.listen-address "$LISTEN" &
SERVE_PID=$!
for _ in $(seq 1 100); do
  if curl -fs "http://$LISTEN/-/ready" >/dev/null 2>&1; then break; fi
  kill -0 "$SERVE_PID" 2>/dev/null || { log "mqaudit serve exited"; exit 1; }
  sleep 0.2
done
curl -fs "http://$LISTEN/-/ready" >/dev/null || { log "mqaudit did not become ready"; exit 1; }

if ((CHECK)); then
  # Compare every expectation the workload printed with the exported value.
  for _ in $(seq 1 30); do
    metrics=$(curl -fs "http://$LISTEN/metrics")
    ok=1
    while read -r _ kind group want; do
      family=rocketmq_consumer_group_lag_messages
      [[ $kind == dlq ]] && family=rocketmq_consumer_group_dlq_messages
      got=$(grep -F "$family{rocketmq_cluster=\"MqauditTest\",group=\"$group\"" <<<"$metrics" | awk '{s += $2} END {print s + 0}')
      [[ $got == "$want" ]] || { ok=0; last="$kind of $group is $got, expected $want"; }
    done < <(grep '^expect ' "$DIR/workload.out")
    grep -qF 'rocketmq_broker_durability_risk{rocketmq_cluster="MqauditTest",broker="broker-a",broker_id="0",reason="async_flush"} 1' <<<"$metrics" \
      || { ok=0; last="broker-a async_flush risk not reported"; }
    ((ok)) && break
    sleep 1
  done
  ((ok)) || { log "check failed: $last"; exit 1; }
  log "check passed: $(grep -c '^expect ' "$DIR/workload.out") lag and DLQ values match the workload; broker-a async_flush flagged"
fi

# The loss audit's store loss: kill -9 broker-b and cut its commit log
# (and consume queue) where the group stopped reading, as a crash that lost
# the unflushed tail would. The audit must name exactly those messages.
read -r _ _ cut_topic cut_queue cut_offset cut_entries < <(grep '^audit-cut ' "$DIR/workload.out")
log "kill -9 broker-b, cut its commit log from byte $cut_offset, restart it"
scripts/rocketmq-cluster.sh kill "$DIR" broker-b
zero_from() {
  python3 -c '
import os, sys
path, start = sys.argv[1], int(sys.argv[2])
size = os.path.getsize(path)
with open(path, "r+b") as f:
    f.seek(start)
    f.write(bytes(max(0, size - start)))
    f.flush()
    os.fsync(f.fileno())' "$1" "$2"
}
zero_from "$BROKER_B_STORE/commitlog/00000000000000000000" "$cut_offset"
zero_from "$BROKER_B_STORE/consumequeue/$cut_topic/$cut_queue/00000000000000000000" "$((cut_entries * 20))"
scripts/rocketmq-cluster.sh start "$DIR" broker-b

# The audit's verdicts, once the deadline has passed: "STATUS STAGE KEY" lines.
audit_verdicts() {
  curl -fs "http://$LISTEN/api/v1/audit/findings?flow=orders" | python3 -c '
import json, sys
for f in json.load(sys.stdin)["data"]:
    if f["kind"] == "missing" and f["status"] in ("lost", "dead_letter"):
        print(f["status"], f["stage"], f["key"])' | sort
}
log "waiting for the loss audit to pass the deadline (about 40 s)"
want=$(grep '^audit-expect ' "$DIR/workload.out" | cut -d' ' -f2- | sort)
got=
for _ in $(seq 1 60); do
  got=$(audit_verdicts 2>/dev/null || true)
  [[ $got == "$want" ]] && break
  kill -0 "$SERVE_PID" 2>/dev/null || { log "mqaudit serve exited"; exit 1; }
  sleep 2
done

if ((CHECK)); then
  if [[ $got != "$want" ]]; then
    log "audit check failed: expected"; printf '%s\n' "$want" >&2
    log "got"; printf '%s\n' "$got" >&2
    exit 1
  fi
  log "audit check passed: $(wc -l <<<"$got") lost or dead-lettered messages named at their stage"
  exit 0
fi

cat <<MSG

mqaudit is running against a local RocketMQ cluster (name server $NAMESRV_ADDR).

  Metrics:      http://$LISTEN/metrics
  Readiness:    http://$LISTEN/-/ready
  Checklist:    target/release/mqaudit doctor --namesrv $NAMESRV_ADDR
  Try:          curl -s http://$LISTEN/metrics | grep -E 'consumer_group_(lag_messages|dlq_messages)|durability_risk'

$(grep '^expect ' "$DIR/workload.out" | awk '$4 > 0 {printf "  %s %s: %s\n", $3, $2, $4}')
broker-a runs ASYNC_MASTER + ASYNC_FLUSH with a slave; broker-b SYNC_MASTER + SYNC_FLUSH.

The loss audit (flow "orders": the workload's outbox against its consume log),
message by message, at the stage that lost each one:
$(awk '{printf "  %-12s %-12s %s\n", $1, $2, $3}' <<<"$got")

  Findings:     curl -s 'http://$LISTEN/api/v1/audit/findings?flow=orders'
  Counters:     curl -s http://$LISTEN/metrics | grep -E 'mqaudit_messages_(lost|dead_lettered)_total'
  One message:  target/release/mqaudit lookup --config $DIR/mqaudit.toml --flow orders --key order-17
$(target/release/mqaudit lookup --config "$DIR/mqaudit.toml" --flow orders --key order-17 2>/dev/null \
  | python3 -c 'import json, sys; f = json.load(sys.stdin)["findings"][0]; print("  order-17:", f["status"], "at", f["stage"], "-", json.dumps(f["evidence"]))' 2>/dev/null)

Press Ctrl-C to stop mqaudit and the cluster.
MSG
wait "$SERVE_PID"
