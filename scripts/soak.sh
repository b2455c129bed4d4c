#!/usr/bin/env bash
# The soak benchmark (benches/soak.rs): starts a Java test cluster, runs
# `mqaudit serve` against it for SECONDS (default 3600) with a steady Java
# client workload, a flow audited every minute and broker-b restarted every
# 10 minutes, then stops the cluster. Not part of CI. Figures: stdout and
# target/soak/{soak.csv,soak.svg}; record them in docs/benchmarks.md.
#
#   scripts/soak.sh [SECONDS] [--broker java4|java5] [--load max]
#
# --load max: the end-to-end load benchmark (two producers flat out, no
# restarts; the summary adds the rate, audit time over traffic time split
# into trace ingest, reading records and the rest, and serve's peak RSS).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TO_RUN=3600 BROKER=java4 LOAD=
while (($#)); do
  case $1 in
    --broker) BROKER=$2; shift 2 ;;
    --broker=*) BROKER=${1#--broker=}; shift ;;
    --load) LOAD=$2; shift 2 ;;
    --load=*) LOAD=${1#--load=}; shift ;;
    *) SECONDS_TO_RUN=$1; shift ;;
  esac
done
case $BROKER in java4|java5) ;; *) echo "the soak needs a Java cluster (java4, java5), not '$BROKER'" >&2; exit 64 ;; esac
DIR=$(mktemp -d "${TMPDIR:-/tmp}/mqaudit-soak-cluster.XXXXXX")
cleanup() {
  trap - EXIT
  scripts/rocketmq-cluster.sh down "$DIR" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
cargo bench --no-run --bench soak
scripts/rocketmq-cluster.sh up "$DIR" --broker "$BROKER" >/dev/null
MQAUDIT_CLUSTER_ENV=$DIR/cluster.env MQAUDIT_SOAK_SECONDS=$SECONDS_TO_RUN MQAUDIT_SOAK_LOAD=$LOAD cargo bench --bench soak
