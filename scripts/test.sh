#!/usr/bin/env bash
# The whole test suite, on a fresh machine of the project's kind:
#   1. installs what the tests need (Debian packages including a JDK, the
#      pinned rocketmq-rust binaries into a cache outside the repository);
#   2. checks formatting and lints;
#   3. runs the matrix: one leg per broker flavour, each against its own real
#      RocketMQ cluster on 127.0.0.1 (a missing cluster is an error, not a skip):
#        rust    rocketmq-rust 1.0.0: every test (unit, fixtures, fakes,
#                real cluster, Prometheus/Alertmanager, audit scenarios)
#        java4   Apache RocketMQ 4.9.8 and its Java client: the broker-facing
#        java5   Apache RocketMQ 5.3.3    tests (admin, doctor, exporter,
#                                          mqadmin cross-checks, audit)
#   4. runs the quick start in check mode;
#   5. always stops every cluster, and prints one closing "N passed, N failed".
#
# MQAUDIT_BROKERS="rust java4 java5" (the default) chooses the legs; naming
# fewer is the only way to leave one out. A leg whose broker cannot be found
# fails with what is missing. ROCKETMQ_HOME (or ROCKETMQ4_HOME/ROCKETMQ5_HOME)
# points the Java legs at an Apache binary distribution.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[test.sh] %s\n' "$*" >&2; }

need_debian_packages() {
  local missing=()
  command -v python3 >/dev/null || missing+=(python3)
  python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
  command -v systemd-analyze >/dev/null || missing+=(systemd)
  command -v cc >/dev/null || missing+=(gcc)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  command -v pgrep >/dev/null || missing+=(procps)
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)
  command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
  command -v curl >/dev/null || missing+=(curl)
  command -v openssl >/dev/null || missing+=(openssl)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    if [[ $(id -u) -eq 0 ]]; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      sudo apt-get update -qq
      sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
  fi
}

need_debian_packages
command -v cargo >/dev/null || { log "cargo is required (Rust 1.95)"; exit 1; }

# kubernetes-validate (PyPI, pinned) checks deploy/kubernetes against the
# Kubernetes API schemas, in its own virtual environment in the cache.
KUBERNETES_VALIDATE_VERSION=1.31.0
DEPLOY_VENV=${MQAUDIT_CACHE_DIR:-$HOME/.cache/mqaudit}/venv-deploy
if ! "$DEPLOY_VENV/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "$KUBERNETES_VALIDATE_VERSION"; then
  log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $DEPLOY_VENV"
  python3 -m venv "$DEPLOY_VENV"
  "$DEPLOY_VENV/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
export MQAUDIT_KUBERNETES_VALIDATE=$DEPLOY_VENV/bin/kubernetes-validate

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

log "promtool check rules / test rules"
promtool check rules alerts/*.yml
promtool test rules alerts/tests/*.test.yml

read -r -a LEGS <<<"${MQAUDIT_BROKERS:-rust java4 java5}"
((${#LEGS[@]})) || { log "MQAUDIT_BROKERS names no leg"; exit 64; }
for leg in "${LEGS[@]}"; do
  case $leg in rust|java4|java5) ;; *) log "unknown leg '$leg' in MQAUDIT_BROKERS (rust, java4, java5)"; exit 64 ;; esac
done

# What each leg runs. The rust leg runs everything but the Java-client tests;
# a Java leg runs the tests that talk to brokers (each filter is a module of
# tests/it).
JAVA_FILTERS=(cluster:: core:: doctor:: exporter:: java:: probe::)
# ACL 1.0 exists on 4.9.8 only (5.3.3 ignores aclEnable; its ACL 2.0 user
# store is RocksDB, stubbed in the shared distribution).
JAVA4_ONLY_FILTERS=(java_acl::)
# POP consumption exists on 5.x only.
JAVA5_ONLY_FILTERS=(java_pop:: java_controller::)
# The Java audit scenario that starts a cluster of its own (run alone).
JAVA_PRIVATE_CLUSTER_TEST=java_audit::a_dead_master_is_diagnosed_through_its_slave_and_undiagnosed_is_retried

RESULTS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mqaudit-test.XXXXXX")
CLUSTER_DIR=
PG_DIR=

# A private PostgreSQL server (the Debian package's binaries) for the audit
# suite's pass on the PostgreSQL store: fresh data directory, 127.0.0.1 on a
# free port, trust authentication; as the postgres user when we are root
# (PostgreSQL refuses root). Sets PG_URL (not in a subshell: PG_DIR must
# survive for the cleanup).
PG_AS=()
[[ $(id -u) -ne 0 ]] || PG_AS=(runuser -u postgres --)
pg_bin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1; }
pg_up() {
  local bin port
  bin=$(pg_bin)
  PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mqaudit-pg-store.XXXXXX")
  [[ $(id -u) -ne 0 ]] || chown -R postgres:postgres "$PG_DIR"
  "${PG_AS[@]}" "$bin/initdb" -D "$PG_DIR/data" -A trust -U mqaudit --no-sync >"$PG_DIR/initdb.log" 2>&1 || return 1
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "${PG_AS[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
    -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null || return 1
  PG_URL="postgres://mqaudit@127.0.0.1:$port/postgres"
}
pg_down() {
  if [[ -n $PG_DIR ]]; then
    "${PG_AS[@]}" "$(pg_bin)/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
    PG_DIR=
  fi
}

cleanup() {
  trap '' PIPE # a closed output must not stop the cleanup
  pg_down
  if [[ -n $CLUSTER_DIR ]]; then
    scripts/rocketmq-cluster.sh down "$CLUSTER_DIR" || true
    rm -rf "$CLUSTER_DIR"
    CLUSTER_DIR=
  fi
}
trap 'cleanup; rm -rf "$RESULTS_DIR"' EXIT
trap 'exit 130' INT TERM

total_passed=0
total_failed=0
summary=()
# Run one leg; never exits the script (a failed leg is counted and reported).
run_leg() {
  local leg=$1 started=$SECONDS status=0 passed failed
  log "leg $leg: installing what it needs"
  if ! scripts/rocketmq-cluster.sh install --broker "$leg"; then
    log "leg $leg: FAILED: its broker is missing (see above); set MQAUDIT_BROKERS to choose fewer legs"
    total_failed=$((total_failed + 1))
    summary+=("$leg: broker missing")
    return 0
  fi
  CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mqaudit-cluster-$leg.XXXXXX")
  log "leg $leg: starting the test cluster in $CLUSTER_DIR"
  if ! scripts/rocketmq-cluster.sh up "$CLUSTER_DIR" --broker "$leg"; then
    log "leg $leg: FAILED: the cluster did not start; logs under $CLUSTER_DIR"
    tail -n 20 "$CLUSTER_DIR"/*/out.log >&2 || true
    total_failed=$((total_failed + 1))
    summary+=("$leg: cluster did not start")
    cleanup
    return 0
  fi
  local out=$RESULTS_DIR/$leg.log
  log "leg $leg: cargo test"
  set +e
  if [[ $leg == rust ]]; then
    MQAUDIT_CLUSTER_ENV=$CLUSTER_DIR/cluster.env cargo test --lib --bins --tests -- --skip java:: --skip java_acl:: --skip java_pop:: --skip java_controller:: --skip java_audit:: --skip java_mixed:: --skip java_scale:: 2>&1 | tee "$out"
    status=${PIPESTATUS[0]}
    # The audit scenarios again, on the PostgreSQL store (each test its own
    # database on one server): the same verdicts and crash safety there.
    if pg_up; then
      log "leg $leg: the audit scenarios on the PostgreSQL store ($PG_URL)"
      MQAUDIT_TEST_STORE_URL=$PG_URL MQAUDIT_CLUSTER_ENV=$CLUSTER_DIR/cluster.env cargo test --test it -- audit:: --skip java_audit:: 2>&1 | tee -a "$out"
      [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
    else
      log "leg $leg: FAILED: PostgreSQL for the store pass did not start (logs under $PG_DIR)"
      status=1
    fi
    pg_down
  else
    # Four phases: the broker-figure comparisons first, on a cluster no
    # audit scenario is writing to; then the audit scenarios; then the mixed
    # scenario alone (it starts a second Java cluster: with both clusters'
    # JVMs and the other scenarios' clients on two cores, the Java client's
    # asynchronous trace sends time out and records are lost), and the
    # large window alone.
    local filters=("${JAVA_FILTERS[@]}")
    [[ $leg != java4 ]] || filters+=("${JAVA4_ONLY_FILTERS[@]}")
    [[ $leg != java5 ]] || filters+=("${JAVA5_ONLY_FILTERS[@]}")
    MQAUDIT_CLUSTER_ENV=$CLUSTER_DIR/cluster.env cargo test --test it -- "${filters[@]}" 2>&1 | tee "$out"
    status=${PIPESTATUS[0]}
    # With the audit scenarios: the late-DLQ and delayed-retry re-check,
    # driven by our client, judged on the Java broker's own DLQ and delay topic.
    # The dead-master scenario alone after them: its private cluster's JVMs
    # beside the others made the Java client's asynchronous trace sends time
    # out, and the held messages' two minutes run out on a loaded machine.
    MQAUDIT_CLUSTER_ENV=$CLUSTER_DIR/cluster.env cargo test --test it -- java_audit:: audit::a_consume_loss_is_re_checked --skip "$JAVA_PRIVATE_CLUSTER_TEST" 2>&1 | tee -a "$out"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
    MQAUDIT_CLUSTER_ENV=$CLUSTER_DIR/cluster.env cargo test --test it -- "$JAVA_PRIVATE_CLUSTER_TEST" 2>&1 | tee -a "$out"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
    # The Java client's scenarios once more on the PostgreSQL store (4.9.8
    # only: the store does not depend on the broker version).
    if [[ $leg == java4 ]]; then
      if pg_up; then
        log "leg $leg: the Java audit scenarios on the PostgreSQL store ($PG_URL)"
        MQAUDIT_TEST_STORE_URL=$PG_URL MQAUDIT_CLUSTER_ENV=$CLUSTER_DIR/cluster.env cargo test --test it -- java_audit:: --skip "$JAVA_PRIVATE_CLUSTER_TEST" 2>&1 | tee -a "$out"
        [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
        MQAUDIT_TEST_STORE_URL=$PG_URL MQAUDIT_CLUSTER_ENV=$CLUSTER_DIR/cluster.env cargo test --test it -- "$JAVA_PRIVATE_CLUSTER_TEST" 2>&1 | tee -a "$out"
        [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
      else
        log "leg $leg: FAILED: PostgreSQL for the store pass did not start (logs under $PG_DIR)"
        status=1
      fi
      pg_down
    fi
    MQAUDIT_CLUSTER_ENV=$CLUSTER_DIR/cluster.env cargo test --test it -- java_mixed:: 2>&1 | tee -a "$out"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
    # A window of 80,000 Java-client messages, alone (four producer JVMs
    # flat out would starve the trace sends of scenarios beside it).
    MQAUDIT_CLUSTER_ENV=$CLUSTER_DIR/cluster.env cargo test --test it -- java_scale:: 2>&1 | tee -a "$out"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
  fi
  set -e
  cleanup
  # Sum "test result:" lines over every test binary of the leg.
  read -r passed failed <<<"$(awk '/^test result:/ { for (i = 2; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
              END { printf "%d %d", p, f }' "$out")"
  if [[ $status -ne 0 && $failed -eq 0 ]]; then
    failed=1 # it did not get as far as running tests (build error, crash)
  fi
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  summary+=("$leg: $passed passed, $failed failed in $((SECONDS - started)) s")
  log "leg $leg: $passed passed, $failed failed in $((SECONDS - started)) s"
}

for leg in "${LEGS[@]}"; do
  run_leg "$leg"
done

log "README's first command: scripts/quickstart.sh --check"
quickstart_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if MQAUDIT_QUICKSTART_LISTEN=127.0.0.1:$quickstart_port scripts/quickstart.sh --check; then
  total_passed=$((total_passed + 1))
  summary+=("quickstart --check: passed")
else
  total_failed=$((total_failed + 1))
  summary+=("quickstart --check: FAILED")
fi

# The quick start stops everything it started whatever happens to its output:
# `quickstart.sh 2>&1 | tee log`, then Ctrl-C (SIGINT to the whole group, the
# pipe closed under it).
quickstart_interrupted() {
  local log port pid group
  log=$(mktemp "${TMPDIR:-/tmp}/mqaudit-quickstart-int.XXXXXX")
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # Started in the background, it would inherit SIGINT ignored (bash sets
  # that for asynchronous commands, and a shell cannot trap a signal
  # ignored on entry): restore the default a terminal gives, as a user's
  # quick start has it.
  MQAUDIT_QUICKSTART_LISTEN=127.0.0.1:$port python3 -c 'import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execvp(sys.argv[1], sys.argv[1:])' \
    setsid bash -c 'scripts/quickstart.sh 2>&1 | tee "$1" >/dev/null' _ "$log" &
  pid=$!
  for _ in $(seq 1 600); do
    grep -q "starting mqaudit serve" "$log" 2>/dev/null && break
    sleep 0.5
  done
  group=$(ps -o pgid= -p "$pid" | tr -d ' ')
  if ! grep -q "starting mqaudit serve" "$log"; then
    log "quickstart (interrupted): it never got to serving"; cat "$log" >&2
    kill -KILL -- "-$group" 2>/dev/null; rm -f "$log"; return 1
  fi
  kill -INT -- "-$group"
  # Its cleanup stops serve, then each node with SIGTERM (20 s grace each
  # before SIGKILL): give it all of that before judging what is left.
  local waited=0
  while kill -0 "$pid" 2>/dev/null && ((waited < 240)); do sleep 0.5; waited=$((waited + 1)); done
  if kill -0 "$pid" 2>/dev/null; then
    log "quickstart (interrupted) still running 120 s after Ctrl-C; its output:"; tail -n 30 "$log" >&2
    kill -KILL -- "-$group" 2>/dev/null; pkill -KILL -f "mqaudit-quickstart\." || true
    rm -f "$log"; return 1
  fi
  log "quickstart (interrupted) exited $((waited / 2)) s after Ctrl-C"
  sleep 1
  if leftover=$(pgrep -af "mqaudit-quickstart\."); then
    log "quickstart (interrupted) left processes running: $leftover; its output:"
    tail -n 30 "$log" >&2
    pkill -KILL -f "mqaudit-quickstart\." || true
    rm -f "$log"; return 1
  fi
  rm -f "$log"
}
log "quick start interrupted under a pipe: scripts/quickstart.sh 2>&1 | tee log, then Ctrl-C"
if quickstart_interrupted; then
  total_passed=$((total_passed + 1))
  summary+=("quickstart interrupted: stopped everything")
else
  total_failed=$((total_failed + 1))
  summary+=("quickstart interrupted: FAILED")
fi

# `down` must leave nothing behind: every node ran with a config under its dir.
if leftover=$(pgrep -af "mqaudit-cluster-"); then
  log "processes survived cluster shutdown: $leftover"
  total_failed=$((total_failed + 1))
  summary+=("cluster shutdown: processes survived")
fi
for line in "${summary[@]}"; do log "$line"; done
echo "$total_passed passed, $total_failed failed"
[[ $total_failed -eq 0 ]]
