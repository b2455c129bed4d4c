#!/usr/bin/env bash
# The whole test suite, on a fresh machine of the project's kind:
#   1. installs what the tests need (Debian packages, the pinned rocketmq-rust
#      binaries into a cache outside the repository);
#   2. checks formatting and lints;
#   3. starts the real RocketMQ test cluster on 127.0.0.1;
#   4. runs every test against it (a missing cluster is an error, not a skip);
#   5. always stops the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[test.sh] %s\n' "$*" >&2; }

need_debian_packages() {
  local missing=()
  command -v python3 >/dev/null || missing+=(python3)
  command -v cc >/dev/null || missing+=(gcc)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  command -v pgrep >/dev/null || missing+=(procps)
  command -v promtool >/dev/null || missing+=(prometheus)
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

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

log "promtool check rules / test rules"
promtool check rules alerts/*.yml
promtool test rules alerts/tests/*.test.yml

log "installing rocketmq-rust (reused from the cache when present)"
scripts/rocketmq-cluster.sh install

CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mqaudit-cluster.XXXXXX")
cleanup() {
  scripts/rocketmq-cluster.sh down "$CLUSTER_DIR" || true
  rm -rf "$CLUSTER_DIR"
}
trap cleanup EXIT INT TERM

log "starting the test cluster in $CLUSTER_DIR"
scripts/rocketmq-cluster.sh up "$CLUSTER_DIR"
export MQAUDIT_CLUSTER_ENV=$CLUSTER_DIR/cluster.env

log "cargo test"
set +e
cargo test --lib --bins --tests 2>&1 | tee "$CLUSTER_DIR/test.log"
status=${PIPESTATUS[0]}
set -e
if [[ $status -ne 0 ]]; then
  log "tests failed (exit $status)"
  exit "$status"
fi
# One closing line over every test binary.
totals=$(awk '/^test result:/ { for (i = 2; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
              END { printf "%d %d", p, f }' "$CLUSTER_DIR/test.log")
read -r passed failed <<<"$totals"
cleanup
trap - EXIT INT TERM

log "README's first command: scripts/quickstart.sh --check"
quickstart_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
MQAUDIT_QUICKSTART_LISTEN=127.0.0.1:$quickstart_port scripts/quickstart.sh --check

# `down` must leave nothing behind: every node ran with a config under the dir.
if leftover=$(pgrep -af "$CLUSTER_DIR"); then
  log "processes survived cluster shutdown: $leftover"
  exit 1
fi
log "all tests passed"
echo "$passed passed, $failed failed"
