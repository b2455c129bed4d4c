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
  trap - EXIT INT TERM
  if [[ -n $SERVE_PID ]] && kill -0 "$SERVE_PID" 2>/dev/null; then
    kill -TERM "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
  fi
  scripts/rocketmq-cluster.sh down "$DIR" >/dev/null 2>&1 || true
  rm -rf "$DIR"
  log "stopped mqaudit and the cluster"
}
trap cleanup EXIT INT TERM

log "starting the RocketMQ test cluster ($BROKER) in $DIR"
scripts/rocketmq-cluster.sh up "$DIR" --broker "$BROKER" >/dev/null
# shellcheck disable=SC1091
source "$DIR/cluster.env"

log "running the workload"
target/release/examples/workload "$DIR/cluster.env" 200 | tee "$DIR/workload.out" | grep -v '^expect ' >&2

log "starting mqaudit serve on $LISTEN"
target/release/mqaudit serve --config config/quickstart.toml --namesrv "$NAMESRV_ADDR" \
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
Press Ctrl-C to stop mqaudit and the cluster.
MSG
wait "$SERVE_PID"
