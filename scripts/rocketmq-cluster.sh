#!/usr/bin/env bash
# The real RocketMQ test cluster on 127.0.0.1, in one of three flavours:
#   rust    rocketmq-rust name server and brokers, pinned, installed into a
#           cache outside the repository (the default)
#   java4   Apache RocketMQ 4.9.8 (Java)
#   java5   Apache RocketMQ 5.3.3 (Java)
# The Java distributions come from ROCKETMQ_HOME (an Apache binary
# distribution: lib/*.jar) or, when unset, from ../shared/rocketmq/<version>.
#
#   scripts/rocketmq-cluster.sh install [--broker F]   build/check what flavour F needs
#   scripts/rocketmq-cluster.sh up DIR [--broker F] [--acl] [--controller]
#                                                  start the cluster; writes DIR/cluster.env
#                                                  (--acl: java4 brokers with ACL 1.0 on, the
#                                                  accounts in cluster.env)
#   scripts/rocketmq-cluster.sh status DIR         show processes and registration
#   scripts/rocketmq-cluster.sh down DIR           stop what `up` started, wait for exit
#   scripts/rocketmq-cluster.sh promote DIR        stop broker-a, restart its slave as its master
#   scripts/rocketmq-cluster.sh stop|kill|start|pause|resume DIR NODE
#                                                  stop (SIGTERM), kill -9, restart, hang
#                                                  (SIGSTOP) or resume (SIGCONT) one node
#                                                  (namesrv, broker-a, broker-a-s, broker-b)
#
# Topology (cluster MqauditTest):
#   namesrv
#   broker-a    master ASYNC_MASTER / ASYNC_FLUSH, with slave broker-a-s (brokerId 1)
#   broker-b    master SYNC_MASTER  / SYNC_FLUSH, no slave
# Ports are chosen free at start. `up` writes the same cluster.env keys for
# every flavour (MQAUDIT_BROKER names it); Java flavours add MQADMIN (DIR/mqadmin,
# the distribution's own mqadmin), ROCKETMQ_VERSION and ROCKETMQ_DIST.
# Environment:
#   MQAUDIT_BROKER      default flavour when --broker is not given (default rust)
#   MQAUDIT_CACHE_DIR   cache root for the rust binaries (default ~/.cache/mqaudit)
#   ROCKETMQ4_HOME / ROCKETMQ5_HOME / ROCKETMQ_HOME
#                       Apache RocketMQ distribution for java4 / java5 / either
set -euo pipefail

REPO_DIR=$(cd "$(dirname "$0")/.." && pwd)
ROCKETMQ_VERSION=1.0.0
CACHE_DIR=${MQAUDIT_CACHE_DIR:-$HOME/.cache/mqaudit}
INSTALL_ROOT=$CACHE_DIR/rocketmq-$ROCKETMQ_VERSION
TARGET_DIR=$CACHE_DIR/rocketmq-target
NAMESRV_BIN=$INSTALL_ROOT/bin/rocketmq-namesrv-rust
BROKER_BIN=$INSTALL_ROOT/bin/rocketmq-broker-rust
SHARED_ROCKETMQ=${MQAUDIT_SHARED_ROCKETMQ:-$REPO_DIR/../shared/rocketmq}
CLUSTER_NAME=MqauditTest
NODES=(namesrv broker-a broker-a-s broker-b controller)
FLAVOURS=(rust java4 java5)

log() { printf '[rocketmq-cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

java_version() {
  case $1 in
    java4) echo 4.9.8 ;;
    java5) echo 5.3.3 ;;
    *) die "not a Java flavour: $1" ;;
  esac
}

# The Java distribution of a flavour: ROCKETMQ4_HOME / ROCKETMQ5_HOME, then
# ROCKETMQ_HOME, then ../shared/rocketmq/<version>.
java_home_of() {
  local flavour=$1 version specific home
  version=$(java_version "$flavour")
  if [[ $flavour == java4 ]]; then specific=${ROCKETMQ4_HOME:-}; else specific=${ROCKETMQ5_HOME:-}; fi
  home=${specific:-${ROCKETMQ_HOME:-$SHARED_ROCKETMQ/$version}}
  [[ -d $home/lib ]] || die "no Apache RocketMQ $version for --broker $flavour: $home/lib does not exist (set ROCKETMQ_HOME to an Apache binary distribution)"
  (cd "$home" && pwd)
}

# The class path: classpath.txt's order when the distribution has one,
# else every jar in lib/ (an Apache binary distribution).
java_classpath() {
  local home=$1
  if [[ -f $home/classpath.txt ]]; then
    sed "s#^#$home/#" "$home/classpath.txt" | paste -sd:
  else
    printf '%s\n' "$home"/lib/*.jar | paste -sd:
  fi
}

need_java() {
  command -v java >/dev/null || die "java not found: install a JRE (Debian: openjdk-17-jre-headless)"
}

JAVA_OPENS="--add-exports java.base/sun.nio.ch=ALL-UNNAMED --add-opens java.base/sun.nio.ch=ALL-UNNAMED \
--add-opens java.base/java.nio=ALL-UNNAMED --add-opens java.base/jdk.internal.ref=ALL-UNNAMED \
--add-opens java.base/java.lang=ALL-UNNAMED --add-opens java.base/java.util=ALL-UNNAMED"

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
# Below the kernel's ephemeral range: a port picked there can be taken by any
# outgoing connection (a test's clients) before the broker binds it.
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
except (OSError, ValueError, IndexError):
    ephemeral_low = 32768
high = max(ephemeral_low - 10, 12000)
while len(found) < want:
    base = random.randrange(10000, high, 10)
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

# A Java broker's properties file: the same topology and small store as the
# rust flavour. HA listens on listenPort + 1 (Java derives it), VIP on - 2.
write_java_broker_config() {
  local dir=$1 name=$2 id=$3 role=$4 flush=$5 base=$6 namesrv=$7 flavour=$8
  local listen=$((base + 2))
  mkdir -p "$dir/$name/store/commitlog"
  {
    echo "brokerClusterName=$CLUSTER_NAME"
    echo "brokerName=${name%-s}"
    echo "brokerId=$id"
    echo "listenPort=$listen"
    echo "brokerRole=$role"
    echo "flushDiskType=$flush"
    echo "namesrvAddr=$namesrv"
    echo "brokerIP1=127.0.0.1"
    echo "brokerIP2=127.0.0.1"
    echo "storePathRootDir=$dir/$name/store"
    echo "storePathCommitLog=$dir/$name/store/commitlog"
    echo "mappedFileSizeCommitLog=4194304"
    echo "mappedFileSizeConsumeQueue=60000"
    echo "maxHashSlotNum=20000"
    echo "maxIndexNum=80000"
    echo "autoCreateTopicEnable=true"
    echo "autoCreateSubscriptionGroup=true"
    echo "traceTopicEnable=true"
    # Fast retries (levels 3-17: 1 s); level 18 holds a delayed message two
    # minutes, long enough to audit it while it is not yet deliverable.
    echo "messageDelayLevel=1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 120s"
    # SQL92 subscriptions.
    echo "enablePropertyFilter=true"
    # Transactions left unknown are checked every 2 s and discarded after
    # 2 checks (to TRANS_CHECK_MAX_TIME_TOPIC), instead of minutes later.
    echo "transactionTimeOut=2000"
    echo "transactionCheckInterval=2000"
    echo "transactionCheckMax=2"
    # A send may wait 1 s (default 200 ms) in the broker's queue before it
    # is refused as busy: three JVMs and the tests share two cores.
    echo "waitTimeMillsInSendQueue=1000"
    [[ -f $dir/acl ]] && echo "aclEnable=true"
    if [[ $flavour == java5 ]]; then
      echo "bindAddress=127.0.0.1"
      echo "timerWheelEnable=true"
      echo "mappedFileSizeTimerLog=4194304"
      echo "timerPrecisionMs=1000"
      echo "metricsExporterType=DISABLE"
    fi
  } >"$dir/$name/broker.conf"
  printf '%s\n' "$listen" >"$dir/$name/listen.port"
}

# 5.x controller mode (--controller, java5): a standalone DLedger controller
# of one peer. No broker joins it: brokers with enableControllerMode never
# register on the shared 5.3.3 distribution, whose controller cannot apply
# their broker-id requests (fastjson finds no default constructor for
# ApplyBrokerIdEvent: the classes were compiled without parameter names).
write_controller_config() {
  local dir=$1 base=$2
  mkdir -p "$dir/controller/store"
  cat >"$dir/controller/controller.conf" <<EOF
listenPort=$base
controllerType=DLedger
controllerDLegerGroup=mqaudit
controllerDLegerPeers=n0-127.0.0.1:$((base + 1))
controllerDLegerSelfId=n0
controllerStorePath=$dir/controller/store
configStorePath=$dir/controller/controller.properties
metricsExporterType=DISABLE
EOF
  # A DLedger controller serves its requests on its DLedger peer address.
  printf '%s\n' "$((base + 1))" >"$dir/controller/listen.port"
}

# ACL 1.0 for java4: a broker home whose conf/ holds the distribution's files
# and plain_acl.yml with an admin account and a subscribe-only one; requests
# without a valid signature are refused.
write_acl_home() {
  local dir=$1 home=$2 f
  mkdir -p "$dir/rmqhome/conf"
  for f in "$home"/conf/*; do ln -sf "$f" "$dir/rmqhome/conf/"; done
  cat >"$dir/rmqhome/conf/plain_acl.yml" <<'ACL'
globalWhiteRemoteAddresses: []
accounts:
  - accessKey: mqauditAdmin
    secretKey: mqauditAdminSecret
    admin: true
  - accessKey: mqauditReader
    secretKey: mqauditReaderSecret
    admin: false
    defaultTopicPerm: SUB
    defaultGroupPerm: SUB
ACL
}

# `mqadmin` for a Java cluster, as DIR/mqadmin (cluster.env names it).
write_mqadmin() {
  local dir=$1 home=$2 flavour=$3 logconf=
  [[ $flavour == java5 ]] && logconf="-Drmq.logback.configurationFile=$home/conf/rmq.tools.logback.xml"
  cat >"$dir/mqadmin" <<EOF
#!/usr/bin/env bash
# mqadmin of Apache RocketMQ $(java_version "$flavour") from $home
exec java -Xms64m -Xmx256m -Duser.home="$dir/home" -Drocketmq.home.dir="$home" $logconf \\
  -cp "$(java_classpath "$home")" org.apache.rocketmq.tools.command.MQAdminStartup "\$@"
EOF
  chmod +x "$dir/mqadmin"
}

start_java_node() {
  local dir=$1 node=$2 home cp logconf=() main heap
  home=$(cat "$dir/rocketmq.home")
  cp=$(java_classpath "$home")
  mkdir -p "$dir/$node/home"
  if [[ $node == namesrv ]]; then
    local port; port=$(cat "$dir/namesrv/listen.port")
    cat >"$dir/namesrv/namesrv.conf" <<EOF
listenPort=$port
kvConfigPath=$dir/namesrv/kvConfig.json
configStorePath=$dir/namesrv/namesrv.properties
EOF
    [[ $(cat "$dir/flavour") == java5 ]] && logconf=("-Drmq.logback.configurationFile=$home/conf/rmq.namesrv.logback.xml")
    main=org.apache.rocketmq.namesrv.NamesrvStartup
    heap="-Xms64m -Xmx256m"
    set -- "$dir" "$node" -c "$dir/namesrv/namesrv.conf"
  elif [[ $node == controller ]]; then
    logconf=("-Drmq.logback.configurationFile=$home/conf/rmq.controller.logback.xml")
    main=org.apache.rocketmq.controller.ControllerStartup
    heap="-Xms64m -Xmx256m"
    set -- "$dir" "$node" -c "$dir/controller/controller.conf"
  else
    [[ $(cat "$dir/flavour") == java5 ]] && logconf=("-Drmq.logback.configurationFile=$home/conf/rmq.broker.logback.xml")
    main=org.apache.rocketmq.broker.BrokerStartup
    heap="-Xms256m -Xmx512m"
    set -- "$dir" "$node" -c "$dir/$node/broker.conf"
  fi
  shift 2
  # With ACL the broker reads $rocketmq.home.dir/conf/plain_acl.yml: give it
  # a home of its own with the distribution's conf files beside it.
  local rmq_home=$home
  if [[ -f $dir/acl && $node != namesrv ]]; then
    rmq_home=$dir/rmqhome
  fi
  # shellcheck disable=SC2086 # word-split the option lists on purpose
  setsid java $heap -XX:MaxDirectMemorySize=256m -XX:+UseG1GC -XX:-UsePerfData $JAVA_OPENS \
    -Duser.home="$dir/$node/home" -Drocketmq.home.dir="$rmq_home" "${logconf[@]}" \
    -cp "$cp" "$main" "$@" >>"$dir/$node/out.log" 2>&1 </dev/null &
  echo $! >"$dir/$node/pid"
}

start_node() {
  local dir=$1 node=$2
  local pidfile=$dir/$node/pid
  if [[ -f $pidfile ]] && alive "$(cat "$pidfile")"; then
    return 0
  fi
  mkdir -p "$dir/$node" "$dir/home"
  if [[ $(cat "$dir/flavour" 2>/dev/null || echo rust) != rust ]]; then
    start_java_node "$dir" "$node"
    return 0
  fi
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

# True while the process runs (a zombie, exited but not yet reaped by an
# init that reaps lazily, counts as gone).
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $state != Z* ]]
}

# Send SIGNAL to the listed nodes at once, then wait for each to exit
# (SIGKILL after 20 s), and forget their pid files.
# A node gets STOP_GRACE_S seconds (default 20) to exit on its signal
# before it is killed; `STOP_GRACE_S=N stop_nodes …` sets it for one call.
stop_nodes() {
  local dir=$1 signal=$2 node pid grace=${STOP_GRACE_S:-20}
  shift 2
  local pids=()
  for node in "$@"; do
    [[ -f $dir/$node/pid ]] || continue
    pid=$(cat "$dir/$node/pid")
    if alive "$pid"; then
      kill "-$signal" "$pid" 2>/dev/null || true
      kill -CONT "$pid" 2>/dev/null || true # a paused node must get its signal
      pids+=("$node:$pid")
    fi
  done
  local entry
  for entry in "${pids[@]}"; do
    node=${entry%%:*} pid=${entry##*:}
    for _ in $(seq 1 $((grace * 10))); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      log "$node (pid $pid) ignored SIG$signal for $grace s; killing"
      kill -KILL "$pid" 2>/dev/null || true
      while alive "$pid"; do sleep 0.1; done
    fi
  done
  for node in "$@"; do rm -f "$dir/$node/pid"; done
}

stop_node() {
  stop_nodes "$1" "${3:-TERM}" "$2"
}

# Seconds a node gets to start: JVMs take 13-45 s (first cold start), Rust < 1 s.
start_timeout() {
  if [[ $(cat "$1/flavour" 2>/dev/null || echo rust) == rust ]]; then echo 30; else echo 180; fi
}

wait_registered() {
  local dir=$1 want=$2 namesrv limit; namesrv=$(cat "$dir/namesrv.addr")
  limit=$(start_timeout "$dir")
  for _ in $(seq 1 $((limit * 10))); do
    local count; count=$(registered_brokers "$namesrv" | wc -l)
    [[ $count -ge $want ]] && return 0
    sleep 0.1
  done
  registered_brokers "$namesrv" >&2 || true
  die "only $(registered_brokers "$namesrv" | wc -l) of $want brokers registered after $limit s; see $dir/*/out.log"
}

wait_port() {
  local port=$1 what=$2 limit=${3:-30}
  for _ in $(seq 1 $((limit * 10))); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  die "$what did not open port $port within $limit s"
}

# Everything flavour F needs before `up`: the rust binaries (built once into
# the cache), or a JRE and the Java distribution.
install_flavour() {
  case $1 in
    rust) install_binaries ;;
    java4|java5) need_java; java_home_of "$1" >/dev/null ;;
    *) die "unknown broker flavour '$1' (one of ${FLAVOURS[*]})" ;;
  esac
}

cmd_up() {
  local dir=$1 flavour=$2 acl=${3:-0} controller=${4:-0}
  install_flavour "$flavour"
  [[ $controller == 0 || $flavour == java5 ]] || die "--controller needs the java5 broker (controller mode is 5.x)"
  # 5.3.3 has no ACL 1.0 validator (aclEnable is ignored) and keeps ACL 2.0
  # users in RocksDB, stubbed in the shared distribution.
  [[ $acl == 0 || $flavour == java4 ]] || die "--acl needs the java4 broker (ACL 1.0; 5.3.3 ignores aclEnable)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [[ -f $dir/cluster.env ]] && [[ -f $dir/namesrv/pid ]] && alive "$(cat "$dir/namesrv/pid")"; then
    die "a cluster is already running in $dir; run down first"
  fi
  rm -rf "$dir"/{namesrv,broker-a,broker-a-s,broker-b,controller,home,rmqhome} "$dir/cluster.env" "$dir/mqadmin" "$dir/acl"
  echo "$flavour" >"$dir/flavour"
  if [[ $acl == 1 ]]; then : >"$dir/acl"; fi
  read -r ns_base a_base as_base b_base ctl_base <<<"$(free_port_bases 5)"
  local namesrv=127.0.0.1:$ns_base
  mkdir -p "$dir/namesrv"
  echo "$ns_base" >"$dir/namesrv/listen.port"
  echo "$namesrv" >"$dir/namesrv.addr"
  local extra=
  if [[ $flavour == rust ]]; then
    write_broker_config "$dir" broker-a 0 ASYNC_MASTER ASYNC_FLUSH "$a_base" "$namesrv"
    write_broker_config "$dir" broker-a-s 1 SLAVE ASYNC_FLUSH "$as_base" "$namesrv"
    write_broker_config "$dir" broker-b 0 SYNC_MASTER SYNC_FLUSH "$b_base" "$namesrv"
  else
    local home; home=$(java_home_of "$flavour")
    echo "$home" >"$dir/rocketmq.home"
    write_java_broker_config "$dir" broker-a 0 ASYNC_MASTER ASYNC_FLUSH "$a_base" "$namesrv" "$flavour"
    write_java_broker_config "$dir" broker-a-s 1 SLAVE ASYNC_FLUSH "$as_base" "$namesrv" "$flavour"
    write_java_broker_config "$dir" broker-b 0 SYNC_MASTER SYNC_FLUSH "$b_base" "$namesrv" "$flavour"
    write_mqadmin "$dir" "$home" "$flavour"
    if [[ $acl == 1 ]]; then
      write_acl_home "$dir" "$home"
      extra="ACL_ADMIN_ACCESS_KEY=mqauditAdmin
ACL_ADMIN_SECRET_KEY=mqauditAdminSecret
ACL_READER_ACCESS_KEY=mqauditReader
ACL_READER_SECRET_KEY=mqauditReaderSecret
"
    fi
    extra="${extra}MQADMIN=$dir/mqadmin
ROCKETMQ_VERSION=$(java_version "$flavour")
ROCKETMQ_DIST=$home"
    if [[ $controller == 1 ]]; then
      write_controller_config "$dir" "$ctl_base"
      extra="$extra
CONTROLLER_ADDR=127.0.0.1:$(cat "$dir/controller/listen.port")"
    fi
  fi
  local limit; limit=$(start_timeout "$dir")
  start_node "$dir" namesrv
  wait_port "$ns_base" "name server" "$limit"
  start_node "$dir" broker-a
  start_node "$dir" broker-b
  wait_registered "$dir" 2
  # The slave starts after its master so it finds the master's HA address.
  start_node "$dir" broker-a-s
  wait_registered "$dir" 3
  if [[ $controller == 1 ]]; then
    start_node "$dir" controller
    wait_port "$(cat "$dir/controller/listen.port")" controller "$limit"
  fi
  cat >"$dir/cluster.env" <<EOF
MQAUDIT_CLUSTER_DIR=$dir
MQAUDIT_BROKER=$flavour
NAMESRV_ADDR=$namesrv
ROCKETMQ_CLUSTER=$CLUSTER_NAME
BROKER_A_ADDR=127.0.0.1:$(cat "$dir/broker-a/listen.port")
BROKER_A_SLAVE_ADDR=127.0.0.1:$(cat "$dir/broker-a-s/listen.port")
BROKER_B_ADDR=127.0.0.1:$(cat "$dir/broker-b/listen.port")
BROKER_A_STORE=$dir/broker-a/store
BROKER_B_STORE=$dir/broker-b/store
EOF
  [[ -n $extra ]] && printf '%s\n' "$extra" >>"$dir/cluster.env"
  cat "$dir/cluster.env"
}

cmd_status() {
  local dir=$1 node
  [[ -f $dir/cluster.env ]] || die "no cluster in $dir"
  for node in "${NODES[@]}"; do
    local pidfile=$dir/$node/pid
    if [[ -f $pidfile ]] && alive "$(cat "$pidfile")"; then
      echo "$node running pid $(cat "$pidfile")"
    else
      echo "$node stopped"
    fi
  done
  echo "registered brokers (name id addr):"
  registered_brokers "$(cat "$dir/namesrv.addr")"
}

# Promote broker-a's slave by hand, as an operator of a cluster without
# DLedger or a controller does: stop the master, restart the slave as
# broker-a's master (brokerId 0, ASYNC_MASTER) on its own store and address.
cmd_promote() {
  local dir=$1 conf
  [[ -f $dir/broker-a-s/pid ]] || die "no broker-a-s in $dir"
  # A promotion keeps what the slave stored only if it shuts down cleanly:
  # a rocketmq-rust broker killed mid-shutdown recovers abnormally and may
  # dispatch none of its replicated messages (its queues then read 0), so
  # a loaded machine's slow shutdown gets a minute, not 20 s.
  STOP_GRACE_S=60 stop_nodes "$dir" TERM broker-a broker-a-s
  if [[ $(cat "$dir/flavour" 2>/dev/null || echo rust) == rust ]]; then
    conf=$dir/broker-a-s/broker.toml
    sed -i -e 's/^brokerId = 1$/brokerId = 0/' -e 's/^brokerRole = "SLAVE"$/brokerRole = "ASYNC_MASTER"/' "$conf"
    grep -q '^brokerId = 0$' "$conf" && ! grep -q 'SLAVE' "$conf" || die "could not rewrite $conf"
  else
    conf=$dir/broker-a-s/broker.conf
    sed -i -e 's/^brokerId=1$/brokerId=0/' -e 's/^brokerRole=SLAVE$/brokerRole=ASYNC_MASTER/' "$conf"
    grep -q '^brokerId=0$' "$conf" && ! grep -q 'SLAVE' "$conf" || die "could not rewrite $conf"
  fi
  rm -f "$dir/broker-a/pid"
  [[ $(cat "$dir/flavour" 2>/dev/null || echo rust) == rust ]] && install_binaries
  start_node "$dir" broker-a-s
  wait_port "$(cat "$dir/broker-a-s/listen.port")" broker-a-s "$(start_timeout "$dir")"
  log "broker-a-s promoted: broker-a's master is now 127.0.0.1:$(cat "$dir/broker-a-s/listen.port")"
}

cmd_down() {
  local dir=$1 node
  [[ -d $dir ]] || return 0
  # Brokers first, all at once (they deregister), the name server last.
  stop_nodes "$dir" TERM broker-a-s broker-a broker-b
  stop_nodes "$dir" TERM controller namesrv
  log "stopped every process started in $dir"
}

main() {
  local cmd=${1:-} flavour=${MQAUDIT_BROKER:-rust} args=() acl=0 controller=0
  shift || true
  while (($#)); do
    case $1 in
      --acl) acl=1; shift ;;
      --controller) controller=1; shift ;;
      --broker) [[ $# -ge 2 ]] || die "--broker needs one of ${FLAVOURS[*]}"; flavour=$2; shift 2 ;;
      --broker=*) flavour=${1#--broker=}; shift ;;
      *) args+=("$1"); shift ;;
    esac
  done
  [[ " ${FLAVOURS[*]} " == *" $flavour "* ]] || die "unknown broker flavour '$flavour' (one of ${FLAVOURS[*]})"
  set -- "${args[@]}"
  case $cmd in
    install) install_flavour "$flavour" ;;
    up) [[ $# -eq 1 ]] || die "usage: $0 up DIR [--broker rust|java4|java5] [--acl] [--controller]"; cmd_up "$1" "$flavour" "$acl" "$controller" ;;
    status) [[ $# -eq 1 ]] || die "usage: $0 status DIR"; cmd_status "$1" ;;
    down) [[ $# -eq 1 ]] || die "usage: $0 down DIR"; cmd_down "$1" ;;
    promote) [[ $# -eq 1 ]] || die "usage: $0 promote DIR"; cmd_promote "$1" ;;
    stop|kill|start|pause|resume)
      [[ $# -eq 2 ]] || die "usage: $0 $cmd DIR NODE"
      [[ " ${NODES[*]} " == *" $2 "* ]] || die "unknown node $2 (one of ${NODES[*]})"
      case $cmd in
        stop) stop_node "$1" "$2" TERM ;;
        kill) stop_node "$1" "$2" KILL ;;
        pause|resume)
          [[ -f $1/$2/pid ]] && alive "$(cat "$1/$2/pid")" || die "$2 is not running in $1"
          if [[ $cmd == pause ]]; then kill -STOP "$(cat "$1/$2/pid")"; else kill -CONT "$(cat "$1/$2/pid")"; fi ;;
        start)
          [[ $(cat "$1/flavour" 2>/dev/null || echo rust) == rust ]] && install_binaries
          start_node "$1" "$2"
          if [[ $2 != namesrv ]]; then wait_port "$(cat "$1/$2/listen.port")" "$2" "$(start_timeout "$1")"; fi ;;
      esac ;;
    *) sed -n '2,30p' "$0" >&2; exit 64 ;;
  esac
}

main "$@"
