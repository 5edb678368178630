#!/usr/bin/env bash
# Run a single-node Apache Kafka broker (KRaft, broker and controller in one
# process) on 127.0.0.1 for development and tests, without Docker.
#
# Usage: kafka.sh start | stop | status | reset | fetch
#
#   start   fetch the jars if needed, format the log directory once, start the
#           broker in the background and wait until it responds to a
#           Metadata request. Exits 0 without a second broker when one from the same
#           run directory is already running on the requested port.
#   stop    SIGTERM, then SIGKILL after KAFKA_STOP_TIMEOUT seconds. Exits 0
#           when no broker is running.
#   status  print whether the broker runs; exit 0 when it does, 3 when not.
#   reset   stop the broker and delete the run directory (topics and offsets),
#           keeping the jars.
#   fetch   only copy the jars from Maven into libs/.
#
# Environment:
#   KAFKA_PORT           client port (default 9092); the controller listens on
#                        KAFKA_PORT + 1
#   KAFKA_RUN_DIR        directory for server.properties, the log directory,
#                        broker.log and the pid file (default: run/ next to
#                        this script)
#   KAFKA_PARTITIONS     partitions of an automatically created topic
#                        (default 1)
#   KAFKA_HEAP           maximum heap of the broker JVM (default 512m)
#   KAFKA_START_TIMEOUT  seconds that start waits for the broker (default 60)
#   KAFKA_STOP_TIMEOUT   seconds that stop waits before SIGKILL (default 30)
#   KAFKA_OPTS           extra JVM options for the broker, split on spaces
#   JAVA_HOME            Java 17 or newer to use in place of java on PATH
set -euo pipefail

readonly KAFKA_VERSION=4.4.0
readonly MIN_JAVA=17

KAFKA_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
readonly KAFKA_DIR
readonly POM="$KAFKA_DIR/pom.xml"
readonly LIBS_DIR="$KAFKA_DIR/libs"
readonly STAMP="$LIBS_DIR/.pom.sha256"
readonly LOG4J_CONFIG="$KAFKA_DIR/log4j2.properties"

PORT=${KAFKA_PORT:-9092}
PARTITIONS=${KAFKA_PARTITIONS:-1}
HEAP=${KAFKA_HEAP:-512m}
START_TIMEOUT=${KAFKA_START_TIMEOUT:-60}
STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}

RUN_DIR=${KAFKA_RUN_DIR:-$KAFKA_DIR/run}
# An absolute path, so that the broker's command line identifies the run
# directory whatever the caller's working directory was.
[[ $RUN_DIR == /* ]] || RUN_DIR="$PWD/$RUN_DIR"
RUN_DIR=${RUN_DIR%/}

PROPERTIES="$RUN_DIR/server.properties"
DATA_DIR="$RUN_DIR/data"
BROKER_LOG="$RUN_DIR/broker.log"
PID_FILE="$RUN_DIR/kafka.pid"
PROBE_CONFIG="$RUN_DIR/probe.properties"
PROBE_LOG="$RUN_DIR/probe.log"

info() { printf 'kafka: %s\n' "$*"; }
warn() { printf 'kafka: warning: %s\n' "$*" >&2; }
die() {
  printf 'kafka: error: %s\n' "$*" >&2
  exit 1
}

now_ms() {
  if [[ -n ${EPOCHREALTIME:-} ]]; then
    local now=${EPOCHREALTIME/[.,]/}
    echo $((now / 1000))
  else
    echo $(($(date +%s) * 1000))
  fi
}

elapsed_since() {
  local ms=$(($(now_ms) - $1))
  printf '%d.%01d s' $((ms / 1000)) $((ms % 1000 / 100))
}

require_integer() {
  local name=$1 value=$2 min=$3 max=$4
  if ! [[ $value =~ ^[0-9]+$ ]] || ((value < min || value > max)); then
    die "$name must be an integer from $min to $max, got '$value'"
  fi
}

validate_settings() {
  require_integer KAFKA_PORT "$PORT" 1 65534
  require_integer KAFKA_PARTITIONS "$PARTITIONS" 1 10000
  require_integer KAFKA_START_TIMEOUT "$START_TIMEOUT" 1 86400
  require_integer KAFKA_STOP_TIMEOUT "$STOP_TIMEOUT" 1 86400
  [[ $HEAP =~ ^[0-9]+[kKmMgG]?$ ]] ||
    die "KAFKA_HEAP must be a JVM size such as 512m or 1g, got '$HEAP'"
  CONTROLLER_PORT=$((PORT + 1))
}

# Locking ----------------------------------------------------------------------

# Serialize commands on one run directory, so that two starts at once (for
# example from parallel test workers) give one broker. flock is part of
# util-linux. Where it is missing, commands run without the lock.
lock_run_dir() {
  command -v flock >/dev/null || return 0
  exec 9>"$RUN_DIR/.lock"
  flock -w $((START_TIMEOUT + STOP_TIMEOUT + 600)) 9 ||
    die "timed out waiting for another kafka.sh command on $RUN_DIR"
}

# Requirements -------------------------------------------------------------------

find_java() {
  if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
    echo "$JAVA_HOME/bin/java"
  else
    command -v java || true
  fi
}

# Print the major version of a Java runtime: 8 for "1.8", 17 for "17".
java_major_version() {
  local spec
  spec=$("$1" -XshowSettings:properties -version 2>&1 |
    sed -n 's/^ *java\.specification\.version = //p')
  spec=${spec#1.}
  echo "${spec%%.*}"
}

# Check for Java and, when the jars must be fetched, Maven. All that is
# missing is reported in one message with the packages that provide it.
check_requirements() {
  local need_maven=$1 problems=() apt=() brew=() major

  JAVA=$(find_java)
  if [[ -z $JAVA ]]; then
    problems+=("Java $MIN_JAVA or newer is missing: no java on PATH and JAVA_HOME is not set")
  else
    major=$(java_major_version "$JAVA")
    if ! [[ $major =~ ^[0-9]+$ ]] || ((major < MIN_JAVA)); then
      problems+=("Java $MIN_JAVA or newer is required, but $JAVA is version '${major:-unknown}'")
    fi
  fi
  if ((${#problems[@]} > 0)); then
    apt+=(openjdk-17-jre-headless)
    brew+=(openjdk@17)
  fi

  if [[ $need_maven == yes ]] && ! command -v mvn >/dev/null; then
    problems+=("Maven (mvn) is missing; it fetches the Kafka $KAFKA_VERSION jars into $LIBS_DIR")
    apt+=(maven)
    brew+=(maven)
  fi

  ((${#problems[@]} == 0)) && return 0
  printf 'kafka: error: %s\n' "${problems[@]}" >&2
  printf 'kafka: on Debian or Ubuntu install with: apt-get install %s\n' "${apt[*]}" >&2
  printf 'kafka: on macOS install with: brew install %s\n' "${brew[*]}" >&2
  [[ ${apt[0]} == maven ]] ||
    printf 'kafka: to use a Java installed elsewhere, set JAVA_HOME to its directory\n' >&2
  exit 1
}

# Jars -------------------------------------------------------------------------

pom_checksum() {
  if command -v sha256sum >/dev/null; then
    sha256sum "$POM" | cut -d' ' -f1
  else
    shasum -a 256 "$POM" | cut -d' ' -f1
  fi
}

libs_complete() {
  [[ -f $STAMP && $(cat "$STAMP") == "$(pom_checksum)" ]] &&
    [[ -f $LIBS_DIR/kafka_2.13-$KAFKA_VERSION.jar ]]
}

# Copy the runtime dependencies of pom.xml into libs/. Maven keeps what it
# downloads in the local repository (~/.m2), so a second fetch after a
# deleted libs/ downloads nothing.
fetch_jars() {
  libs_complete && return 0

  mkdir -p "$LIBS_DIR"
  if command -v flock >/dev/null; then
    exec 8>"$LIBS_DIR/.lock"
    flock -w 1800 8 || die "timed out waiting for another fetch into $LIBS_DIR"
    # Another kafka.sh may have finished the fetch while this one waited.
    libs_complete && return 0
  fi

  info "fetching the Kafka $KAFKA_VERSION jars with Maven into $LIBS_DIR"
  local download="$LIBS_DIR/.download" maven_log="$LIBS_DIR/.maven.log" started
  started=$(now_ms)
  rm -rf "$download"
  # Maven's output is shown only on failure, because even in quiet mode it
  # prints terminal colour codes.
  if ! mvn -q -B -f "$POM" dependency:copy-dependencies \
    -DoutputDirectory="$download" -DincludeScope=runtime >"$maven_log" 2>&1; then
    cat "$maven_log" >&2
    rm -rf "$download"
    die "Maven could not fetch the jars listed in $POM (its output is above)"
  fi

  # NOTE: a broker still running from the old jars fails on its next class
  # load once they are replaced, so stop brokers before changing pom.xml.
  rm -f "$LIBS_DIR"/*.jar
  mv "$download"/*.jar "$LIBS_DIR"/
  rmdir "$download"
  pom_checksum >"$STAMP"
  info "fetched $(find "$LIBS_DIR" -name '*.jar' | wc -l | tr -d ' ') jars in $(elapsed_since "$started")"
}

# Run a Kafka class from libs/ in a small, quick-starting JVM.
run_tool() {
  "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$LOG4J_CONFIG" -Dkafka.log.level=WARN \
    -cp "$LIBS_DIR/*" "$@"
}

# Process state ----------------------------------------------------------------

read_pid() {
  [[ -f $PID_FILE ]] || return 1
  local pid
  pid=$(cat "$PID_FILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  echo "$pid"
}

# True while the process has a thread that has not exited. A JVM's first
# thread turns zombie (Z) while its other threads still run and hold the
# ports, so a zombie counts as exited only when it has one thread left. ps
# on macOS has no nlwp column, and there a zombie counts as exited.
process_alive() {
  local fields state threads
  fields=$(ps -p "$1" -o stat=,nlwp= 2>/dev/null) ||
    fields=$(ps -p "$1" -o stat= 2>/dev/null) || return 1
  read -r state threads <<<"$fields"
  [[ -n $state ]] || return 1
  [[ $state != Z* ]] || ((${threads:-1} > 1))
}

# Print the pid of the broker of this run directory, if it is running. The
# command line must name this run's server.properties, so a pid reused by
# another program after a crash does not count.
running_pid() {
  local pid args
  pid=$(read_pid) || return 1
  process_alive "$pid" || return 1
  args=$(ps -p "$pid" -o args= 2>/dev/null) || return 1
  [[ $args == *kafka.Kafka*"$PROPERTIES"* ]] || return 1
  echo "$pid"
}

# The client port recorded in the generated server.properties.
configured_port() {
  sed -n 's#^listeners=PLAINTEXT://127\.0\.0\.1:\([0-9]*\),.*#\1#p' \
    "$PROPERTIES" 2>/dev/null
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Start ------------------------------------------------------------------------

write_properties() {
  cat >"$PROPERTIES" <<EOF
# Generated by kafka.sh at every start from its environment, so edits are lost.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$DATA_DIR

# One node: every internal topic has one replica, and few partitions, so
# the first consumer group and the first transaction start quickly.
num.partitions=$PARTITIONS
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1

# Tests join groups right away; the default waits 3 s for more members.
group.initial.rebalance.delay.ms=0
EOF
}

# Format the log directory on the first start only, so later starts keep the
# cluster id, topics and committed offsets.
format_storage() {
  [[ -f $DATA_DIR/meta.properties ]] && return 0

  local cluster_id
  cluster_id=$(run_tool kafka.tools.StorageTool random-uuid)
  info "formatting $DATA_DIR with cluster id $cluster_id"
  # NOTE: --standalone is left out because StorageTool rejects it when
  # controller.quorum.voters is set.
  run_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPERTIES" \
    >>"$BROKER_LOG" 2>&1 ||
    die "formatting $DATA_DIR failed with this output:"$'\n'"$(tail -n 20 "$BROKER_LOG")"
}

launch_broker() {
  local jvm_options=(
    "-Xmx$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
    -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$LOG4J_CONFIG"
  )
  local extra_options=()
  # KAFKA_OPTS is a space-separated list of JVM options, as in Kafka's own
  # scripts.
  [[ -n ${KAFKA_OPTS:-} ]] && read -r -a extra_options <<<"$KAFKA_OPTS"

  local command=(
    "$JAVA" "${jvm_options[@]}" ${extra_options[@]+"${extra_options[@]}"}
    -cp "$LIBS_DIR/*" kafka.Kafka "$PROPERTIES"
  )
  # The inner shell writes its own pid and then becomes the JVM, so the pid
  # file names the broker. setsid puts it in a new session, so it outlives
  # the calling shell and its terminal. Descriptors 8 and 9 hold kafka.sh's
  # locks and are closed for the broker.
  local detach=()
  command -v setsid >/dev/null && detach=(setsid)
  # shellcheck disable=SC2016 # $$, $0 and $@ belong to the inner shell.
  ${detach[@]+"${detach[@]}"} nohup bash -c 'echo $$ >"$0" && exec "$@"' \
    "$PID_FILE" "${command[@]}" </dev/null >>"$BROKER_LOG" 2>&1 8>&- 9>&- &

  local waited=0
  until read_pid >/dev/null; do
    ((waited++ < 50)) ||
      die "the broker process did not write its pid file $PID_FILE within 5 s"
    sleep 0.1
  done
}

print_log_tail() {
  printf 'kafka: last 40 lines of %s:\n' "$BROKER_LOG" >&2
  tail -n 40 "$BROKER_LOG" >&2 || true
}

# Wait until the broker responds to a Metadata request, which the Kafka admin
# client sends to list topics. One JVM retries until the deadline, while this loop
# watches that the broker process stays alive.
wait_until_ready() {
  local pid=$1 deadline_ms=$2 remaining_ms
  remaining_ms=$((deadline_ms - $(now_ms)))
  cat >"$PROBE_CONFIG" <<EOF
default.api.timeout.ms=$remaining_ms
request.timeout.ms=5000
reconnect.backoff.max.ms=200
EOF

  run_tool org.apache.kafka.tools.TopicCommand --list \
    --bootstrap-server "127.0.0.1:$PORT" --command-config "$PROBE_CONFIG" \
    >"$PROBE_LOG" 2>&1 8>&- 9>&- &
  local probe=$!

  while process_alive "$probe"; do
    if ! process_alive "$pid"; then
      kill "$probe" 2>/dev/null || true
      wait "$probe" 2>/dev/null || true
      return 1
    fi
    if (($(now_ms) > deadline_ms + 5000)); then
      kill "$probe" 2>/dev/null || true
      wait "$probe" 2>/dev/null || true
      return 1
    fi
    sleep 0.2
  done
  wait "$probe"
}

cmd_start() {
  local started pid port
  started=$(now_ms)
  validate_settings
  mkdir -p "$RUN_DIR"
  lock_run_dir

  if pid=$(running_pid); then
    port=$(configured_port)
    if [[ $port == "$PORT" ]]; then
      info "already running (pid $pid, port $PORT, run directory $RUN_DIR)"
      return 0
    fi
    die "a broker from $RUN_DIR is already running on port ${port:-unknown}," \
      "not $PORT. Stop it first or set KAFKA_RUN_DIR to another directory."
  fi
  rm -f "$PID_FILE"

  local need_maven=yes
  libs_complete && need_maven=no
  check_requirements "$need_maven"

  for port in "$PORT" "$CONTROLLER_PORT"; do
    port_in_use "$port" &&
      die "port $port on 127.0.0.1 is already in use by another process." \
        "Set KAFKA_PORT to a free port (the controller uses KAFKA_PORT + 1)."
  done

  fetch_jars
  # Keep the log of the previous run, so that the tail printed on failure
  # belongs to this one.
  [[ -f $BROKER_LOG ]] && mv -f "$BROKER_LOG" "$BROKER_LOG.1"
  write_properties
  format_storage

  launch_broker
  pid=$(read_pid)
  if ! wait_until_ready "$pid" $(($(now_ms) + START_TIMEOUT * 1000)); then
    if process_alive "$pid"; then
      printf 'kafka: error: the broker did not respond on 127.0.0.1:%s within %s s\n' \
        "$PORT" "$START_TIMEOUT" >&2
      printf 'kafka: it is still running as pid %s. Stop it with: %s stop\n' \
        "$pid" "$0" >&2
      printf 'kafka: the readiness check wrote its output to %s\n' "$PROBE_LOG" >&2
    else
      printf 'kafka: error: the broker exited during startup\n' >&2
      rm -f "$PID_FILE"
    fi
    print_log_tail
    exit 1
  fi
  info "started in $(elapsed_since "$started") (pid $pid, 127.0.0.1:$PORT," \
    "run directory $RUN_DIR)"
}

# Stop, status, reset ------------------------------------------------------------

cmd_stop() {
  local pid started
  if [[ ! -d $RUN_DIR ]]; then
    info "not running (run directory $RUN_DIR does not exist)"
    return 0
  fi
  validate_settings
  lock_run_dir
  if ! pid=$(running_pid); then
    rm -f "$PID_FILE"
    info "not running (run directory $RUN_DIR)"
    return 0
  fi

  started=$(now_ms)
  info "stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline_ms=$((started + STOP_TIMEOUT * 1000))
  while process_alive "$pid" && (($(now_ms) < deadline_ms)); do
    sleep 0.2
  done

  if process_alive "$pid"; then
    warn "pid $pid still running after $STOP_TIMEOUT s. Sending SIGKILL," \
      "so the next start recovers the log directory."
    kill -KILL "$pid" 2>/dev/null || true
    local waited=0
    while process_alive "$pid"; do
      ((waited++ < 100)) || die "pid $pid did not exit 10 s after SIGKILL"
      sleep 0.1
    done
  fi
  rm -f "$PID_FILE"
  info "stopped in $(elapsed_since "$started")"
}

cmd_status() {
  local pid
  if pid=$(running_pid); then
    info "running (pid $pid, port $(configured_port), run directory $RUN_DIR)"
    return 0
  fi
  if [[ -f $PID_FILE ]]; then
    info "not running (stale pid file $PID_FILE)"
  else
    info "not running (run directory $RUN_DIR)"
  fi
  return 3
}

cmd_reset() {
  [[ -d $RUN_DIR ]] || {
    info "nothing to reset: $RUN_DIR does not exist"
    return 0
  }
  # Reject a directory with files that kafka.sh does not create, in case
  # KAFKA_RUN_DIR points somewhere unexpected.
  local entry
  for entry in "$RUN_DIR"/* "$RUN_DIR"/.[!.]*; do
    [[ -e $entry ]] || continue
    case ${entry##*/} in
    server.properties | data | broker.log | broker.log.1 | kafka.pid | \
      probe.properties | probe.log | .lock) ;;
    *)
      die "not deleting $RUN_DIR because it contains ${entry##*/}, which" \
        "kafka.sh does not create. Delete the directory by hand if intended."
      ;;
    esac
  done

  cmd_stop
  rm -rf "$RUN_DIR"
  info "deleted $RUN_DIR; the jars in $LIBS_DIR are kept"
}

cmd_fetch() {
  local need_maven=yes
  libs_complete && need_maven=no
  check_requirements "$need_maven"
  fetch_jars
  info "jars ready in $LIBS_DIR"
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

main() {
  case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  fetch) cmd_fetch ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
  esac
}

main "$@"
