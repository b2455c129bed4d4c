#!/usr/bin/env bash
# The real RocketMQ test cluster: rocketmq-rust name server and brokers,
# pinned, installed into a cache outside the repository, on 127.0.0.1 only.
#
#   scripts/rocketmq-cluster.sh install            build/install the binaries (reused when present)
#   scripts/rocketmq-cluster.sh up DIR             start the cluster; writes DIR/cluster.env
#   scripts/rocketmq-cluster.sh status DIR         show processes and registration
#   scripts/rocketmq-cluster.sh down DIR           stop what `up` started, wait for exit
#   scripts/rocketmq-cluster.sh stop|kill|start DIR NODE
#                                                  stop (SIGTERM), kill -9 or restart one node
#                                                  (namesrv, broker-a, broker-a-s, broker-b)
#
# Topology (cluster MqauditTest):
#   namesrv
#   broker-a    master ASYNC_MASTER / ASYNC_FLUSH, with slave broker-a-s (brokerId 1)
#   broker-b    master SYNC_MASTER  / SYNC_FLUSH, no slave
# Ports are chosen free at start. Environment:
#   MQAUDIT_CACHE_DIR   cache root (default ~/.cache/mqaudit)
set -euo pipefail

ROCKETMQ_VERSION=1.0.0
CACHE_DIR=${MQAUDIT_CACHE_DIR:-$HOME/.cache/mqaudit}
INSTALL_ROOT=$CACHE_DIR/rocketmq-$ROCKETMQ_VERSION
TARGET_DIR=$CACHE_DIR/rocketmq-target
NAMESRV_BIN=$INSTALL_ROOT/bin/rocketmq-namesrv-rust
BROKER_BIN=$INSTALL_ROOT/bin/rocketmq-broker-rust
CLUSTER_NAME=MqauditTest
NODES=(namesrv broker-a broker-a-s broker-b)

log() { printf '[rocketmq-cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

install_binaries() {
  if [[ -x $NAMESRV_BIN && -x $BROKER_BIN ]]; then
    return 0
  fi
  command -v cargo >/dev/null || die "cargo not found; a Rust toolchain is needed to build rocketmq-rust"
  command -v cc >/dev/null || die "a C compiler (cc) is needed by zstd-sys/libz-sys"
  mkdir -p "$INSTALL_ROOT"
  log "building rocketmq-rust $ROCKETMQ_VERSION into $INSTALL_ROOT (about 12 minutes on 2 cores, once)"
  # One shared target dir: the broker build reuses most of the name server's.
  CARGO_TARGET_DIR=$TARGET_DIR cargo install --locked --quiet --root "$INSTALL_ROOT" \
    rocketmq-namesrv --version "$ROCKETMQ_VERSION"
  CARGO_TARGET_DIR=$TARGET_DIR cargo install --locked --quiet --root "$INSTALL_ROOT" \
    rocketmq-broker --version "$ROCKETMQ_VERSION"
  [[ -x $NAMESRV_BIN && -x $BROKER_BIN ]] || die "install finished but binaries are missing in $INSTALL_ROOT/bin"
}

# Print N base ports, each starting a run of 6 free consecutive ports on 127.0.0.1
# (a broker uses base = listen-2, base+2 = listen, base+3 = HA, base+4 = health).
free_port_bases() {
  python3 - "$1" <<'PY'
import random, socket, sys
want = int(sys.argv[1]); found = []; used = set()
def free(p):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while len(found) < want:
    base = random.randrange(20000, 60000, 10)
    run = range(base, base + 6)
    if used.isdisjoint(run) and all(free(p) for p in run):
        found.append(base); used.update(run)
print(" ".join(map(str, found)))
PY
}

# Ask the name server for cluster info and print "name id addr" per broker.
registered_brokers() {
  python3 - "$1" <<'PY'
import json, re, socket, struct, sys
host, port = sys.argv[1].rsplit(":", 1)
header = json.dumps({"code": 106, "flag": 0, "language": "JAVA", "opaque": 1,
                     "serializeTypeCurrentRPC": "JSON", "version": 453}).encode()
frame = struct.pack(">II", 4 + len(header), len(header)) + header
try:
    with socket.create_connection((host, int(port)), timeout=2) as s:
        s.sendall(frame)
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
except OSError:
    sys.exit(0)
if len(data) < 8:
    sys.exit(0)
hlen = struct.unpack(">I", data[4:8])[0] & 0xFFFFFF
body = data[8 + hlen:].decode()
# Quote bare numeric keys (Java fastjson) so json can read it; only used here.
body = re.sub(r'([{,])(\d+):', r'\1"\2":', body)
info = json.loads(body or "{}")
for name, data in sorted(info.get("brokerAddrTable", {}).items()):
    for bid, addr in sorted(data.get("brokerAddrs", {}).items()):
        print(name, bid, addr)
PY
}

write_broker_config() {
  local dir=$1 name=$2 id=$3 role=$4 flush=$5 base=$6 namesrv=$7
  local listen=$((base + 2)) ha=$((base + 3))
  mkdir -p "$dir/$name/store"
  cat >"$dir/$name/broker.toml" <<EOF
[broker]
brokerIp1 = "127.0.0.1"
brokerIp2 = "127.0.0.1"
listenPort = $listen
namesrvAddr = "$namesrv"
storePathRootDir = "$dir/$name/store"
traceTopicEnable = true
autoCreateTopicEnable = true
autoCreateSubscriptionGroup = true
brokerRole = "$role"

[broker.brokerServerConfig]
bindAddress = "127.0.0.1"

[broker.brokerIdentity]
brokerName = "${name%-s}"
brokerClusterName = "$CLUSTER_NAME"
brokerId = $id

[store]
brokerRole = "$role"
flushDiskType = "$flush"
haListenAddress = "127.0.0.1"
haListenPort = $ha
storePathRootDir = "$dir/$name/store"
mappedFileSizeCommitLog = 4194304
mappedFileSizeConsumeQueue = 60000
maxHashSlotNum = 10000
maxIndexNum = 40000
messageDelayLevel = "1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s"
EOF
  printf '%s\n' "$listen" >"$dir/$name/listen.port"
  printf '%s\n' "$((base + 4))" >"$dir/$name/health.port"
}

start_node() {
  local dir=$1 node=$2
  local pidfile=$dir/$node/pid
  if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    return 0
  fi
  mkdir -p "$dir/$node" "$dir/home"
  if [[ $node == namesrv ]]; then
    local port; port=$(cat "$dir/namesrv/listen.port")
    cat >"$dir/namesrv/namesrv.toml" <<EOF
rocketmqHome = "$dir/home"
kvConfigPath = "$dir/namesrv/kvConfig.json"
configStorePath = "$dir/namesrv/namesrv.properties"
EOF
    ROCKETMQ_HOME=$dir/home RUST_LOG=warn setsid "$NAMESRV_BIN" -c "$dir/namesrv/namesrv.toml" \
      --listenPort "$port" --bindAddress 127.0.0.1 >>"$dir/namesrv/out.log" 2>&1 </dev/null &
  else
    ROCKETMQ_HOME=$dir/home RUST_LOG=warn \
      ROCKETMQ_HEALTH_BIND_ADDR=127.0.0.1:$(cat "$dir/$node/health.port") \
      setsid "$BROKER_BIN" -c "$dir/$node/broker.toml" >>"$dir/$node/out.log" 2>&1 </dev/null &
  fi
  echo $! >"$pidfile"
}

# Stop one node with the given signal and wait for it to exit.
stop_node() {
  local dir=$1 node=$2 signal=${3:-TERM}
  local pidfile=$dir/$node/pid
  [[ -f $pidfile ]] || return 0
  local pid; pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$node (pid $pid) ignored SIG$signal for 15 s; killing"
      kill -KILL "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
  fi
  rm -f "$pidfile"
}

wait_registered() {
  local dir=$1 want=$2 namesrv; namesrv=$(cat "$dir/namesrv.addr")
  for _ in $(seq 1 300); do
    local count; count=$(registered_brokers "$namesrv" | wc -l)
    [[ $count -ge $want ]] && return 0
    sleep 0.1
  done
  registered_brokers "$namesrv" >&2 || true
  die "only $(registered_brokers "$namesrv" | wc -l) of $want brokers registered after 30 s; see $dir/*/out.log"
}

wait_port() {
  local port=$1 what=$2
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  die "$what did not open port $port within 30 s"
}

cmd_up() {
  local dir=$1
  install_binaries
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [[ -f $dir/cluster.env ]] && [[ -f $dir/namesrv/pid ]] && kill -0 "$(cat "$dir/namesrv/pid")" 2>/dev/null; then
    die "a cluster is already running in $dir; run down first"
  fi
  rm -rf "$dir"/{namesrv,broker-a,broker-a-s,broker-b,home} "$dir/cluster.env"
  read -r ns_base a_base as_base b_base <<<"$(free_port_bases 4)"
  local namesrv=127.0.0.1:$ns_base
  mkdir -p "$dir/namesrv"
  echo "$ns_base" >"$dir/namesrv/listen.port"
  echo "$namesrv" >"$dir/namesrv.addr"
  write_broker_config "$dir" broker-a 0 ASYNC_MASTER ASYNC_FLUSH "$a_base" "$namesrv"
  write_broker_config "$dir" broker-a-s 1 SLAVE ASYNC_FLUSH "$as_base" "$namesrv"
  write_broker_config "$dir" broker-b 0 SYNC_MASTER SYNC_FLUSH "$b_base" "$namesrv"
  start_node "$dir" namesrv
  wait_port "$ns_base" "name server"
  start_node "$dir" broker-a
  start_node "$dir" broker-b
  wait_registered "$dir" 2
  # The slave starts after its master so it finds the master's HA address.
  start_node "$dir" broker-a-s
  wait_registered "$dir" 3
  cat >"$dir/cluster.env" <<EOF
MQAUDIT_CLUSTER_DIR=$dir
NAMESRV_ADDR=$namesrv
ROCKETMQ_CLUSTER=$CLUSTER_NAME
BROKER_A_ADDR=127.0.0.1:$(cat "$dir/broker-a/listen.port")
BROKER_A_SLAVE_ADDR=127.0.0.1:$(cat "$dir/broker-a-s/listen.port")
BROKER_B_ADDR=127.0.0.1:$(cat "$dir/broker-b/listen.port")
BROKER_A_STORE=$dir/broker-a/store
BROKER_B_STORE=$dir/broker-b/store
EOF
  cat "$dir/cluster.env"
}

cmd_status() {
  local dir=$1 node
  [[ -f $dir/cluster.env ]] || die "no cluster in $dir"
  for node in "${NODES[@]}"; do
    local pidfile=$dir/$node/pid
    if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "$node running pid $(cat "$pidfile")"
    else
      echo "$node stopped"
    fi
  done
  echo "registered brokers (name id addr):"
  registered_brokers "$(cat "$dir/namesrv.addr")"
}

cmd_down() {
  local dir=$1 node
  [[ -d $dir ]] || return 0
  # Brokers first (they deregister), name server last; slaves before masters.
  for node in broker-a-s broker-a broker-b namesrv; do
    stop_node "$dir" "$node" TERM
  done
  log "stopped every process started in $dir"
}

main() {
  local cmd=${1:-}
  case $cmd in
    install) install_binaries ;;
    up) [[ $# -eq 2 ]] || die "usage: $0 up DIR"; cmd_up "$2" ;;
    status) [[ $# -eq 2 ]] || die "usage: $0 status DIR"; cmd_status "$2" ;;
    down) [[ $# -eq 2 ]] || die "usage: $0 down DIR"; cmd_down "$2" ;;
    stop|kill|start)
      [[ $# -eq 3 ]] || die "usage: $0 $cmd DIR NODE"
      [[ " ${NODES[*]} " == *" $3 "* ]] || die "unknown node $3 (one of ${NODES[*]})"
      case $cmd in
        stop) stop_node "$2" "$3" TERM ;;
        kill) stop_node "$2" "$3" KILL ;;
        start) install_binaries; start_node "$2" "$3"
               if [[ $3 != namesrv ]]; then wait_port "$(cat "$2/$3/listen.port")" "$3"; fi ;;
      esac ;;
    *) sed -n '2,18p' "$0" >&2; exit 64 ;;
  esac
}

main "$@"
