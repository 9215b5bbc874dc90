#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on this machine, beside (never instead of) the system broker.
#
#   scripts/rabbitmq-cluster.sh start          start tl1, tl2, tl3 and join them into one cluster
#   scripts/rabbitmq-cluster.sh stop           stop every node, remove the cluster's folder
#   scripts/rabbitmq-cluster.sh status         the nodes, which are running, the cluster view
#   scripts/rabbitmq-cluster.sh kill NODE      kill -9 NODE's Erlang VM (tl1, tl2, tl3)
#   scripts/rabbitmq-cluster.sh restart NODE   start NODE again and wait until it rejoined
#   scripts/rabbitmq-cluster.sh ctl ARGS...    rabbitmqctl with the cluster's cookie (-n NODE ...)
#   scripts/rabbitmq-cluster.sh queues ARGS... rabbitmq-queues with the cluster's cookie
#
# Nodes tl1@localhost, tl2@localhost, tl3@localhost listen for AMQP on 127.0.0.1:5681,
# 5682, 5683 and for Erlang distribution on 127.0.0.1:25681..25683; no plugin is enabled
# (no management listener). epmd (4369) is shared with the system node; the node names
# differ. Everything lives in TASKLEDGER_CLUSTER_DIR (default
# ${TMPDIR:-/tmp}/taskledger-cluster): one data, log and config folder per node and the
# shared Erlang cookie (HOME of the nodes and of the CLI calls made here). The system
# broker's files (/etc/rabbitmq, /var/lib/rabbitmq) are never read or written.
# Works as root or as any user that can run Erlang (nothing is run through `su`).
set -euo pipefail

DIR="${TASKLEDGER_CLUSTER_DIR:-${TMPDIR:-/tmp}/taskledger-cluster}"
NODES=(tl1 tl2 tl3)
BOOT_TIMEOUT_S="${TASKLEDGER_CLUSTER_BOOT_TIMEOUT_S:-120}"

# The broker's own scripts, called directly (Debian's /usr/sbin wrappers `su` to the
# rabbitmq user and lose HOME, hence the cookie).
SBIN=""
for candidate in /usr/lib/rabbitmq/bin "$(dirname "$(command -v rabbitmq-server 2>/dev/null || echo /nonexistent/x)")"; do
    if [ -x "$candidate/rabbitmq-server" ] && [ -x "$candidate/rabbitmqctl" ]; then
        SBIN="$candidate"
        break
    fi
done

die() {
    echo "rabbitmq-cluster: $*" >&2
    exit 1
}

[ -n "$SBIN" ] || die "rabbitmq-server not found (apt-get install rabbitmq-server)"

index_of() { # tlN -> N
    case "$1" in
        tl1 | tl1@localhost) echo 1 ;;
        tl2 | tl2@localhost) echo 2 ;;
        tl3 | tl3@localhost) echo 3 ;;
        *) die "unknown node '$1' (tl1, tl2 or tl3)" ;;
    esac
}

amqp_port() { echo $((5680 + $1)); }
dist_port() { echo $((25680 + $1)); }

# The environment of node N (server and CLI alike): our cookie, our files, our ports.
node_env() {
    local n="$1" name="tl$1"
    local base="$DIR/$name"
    echo HOME="$DIR"
    echo RABBITMQ_NODENAME="$name@localhost"
    echo RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    echo RABBITMQ_NODE_PORT="$(amqp_port "$n")"
    echo RABBITMQ_DIST_PORT="$(dist_port "$n")"
    echo RABBITMQ_CONF_ENV_FILE="$base/rabbitmq-env.conf"
    echo RABBITMQ_CONFIG_FILE="$base/rabbitmq.conf"
    echo RABBITMQ_ADVANCED_CONFIG_FILE="$base/advanced.config"
    echo RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins"
    echo RABBITMQ_MNESIA_BASE="$base/mnesia"
    echo RABBITMQ_LOG_BASE="$base/log"
    echo RABBITMQ_PID_FILE="$base/pid"
    echo RABBITMQ_PLUGINS_EXPAND_DIR="$base/plugins-expand"
    echo RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    echo ERL_EPMD_ADDRESS=127.0.0.1
}

# Run a command in node N's environment (nothing inherited from the system node's).
in_env() {
    local n="$1"
    shift
    local -a vars
    mapfile -t vars < <(node_env "$n")
    env -u RABBITMQ_ENV_LOADED -u RABBITMQ_NODENAME "${vars[@]}" "$@"
}

ctl() { # ctl N args... : rabbitmqctl against node N
    local n="$1"
    shift
    in_env "$n" "$SBIN/rabbitmqctl" -n "tl$n@localhost" "$@"
}

beam_pid() { # the VM's OS pid of node N, or nothing
    local pidfile="$DIR/tl$1/pid"
    [ -s "$pidfile" ] || return 0
    local pid
    pid="$(tr -dc '0-9' <"$pidfile")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
}

prepare() {
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    if [ ! -s "$DIR/.erlang.cookie" ]; then
        (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -dc 'a-f0-9' | tr 'a-f' 'A-F' >"$DIR/.erlang.cookie")
    fi
    chmod 400 "$DIR/.erlang.cookie"
    local n base
    for n in 1 2 3; do
        base="$DIR/tl$n"
        mkdir -p "$base/mnesia" "$base/log"
        : >"$base/rabbitmq-env.conf"
        echo "[]." >"$base/enabled_plugins"
        cat >"$base/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$(amqp_port "$n")
log.file.level = info
log.console = false
EOF
    done
}

start_node() { # start node N in the background (does not wait)
    local n="$1" base="$DIR/tl$1"
    if [ -n "$(beam_pid "$n")" ]; then return 0; fi
    rm -f "$base/pid"
    # -detached would fork away from us; a background setsid keeps the VM off our
    # terminal and signals while the pid file names it.
    in_env "$n" setsid "$SBIN/rabbitmq-server" >>"$base/log/startup.log" 2>&1 </dev/null &
}

wait_node() { # wait until node N's application runs
    local n="$1" base="$DIR/tl$1" deadline=$((SECONDS + BOOT_TIMEOUT_S))
    while [ ! -s "$base/pid" ]; do
        [ $SECONDS -lt $deadline ] || die "tl$n did not write its pid file (see $base/log)"
        sleep 0.2
    done
    ctl "$n" -q wait "$base/pid" --timeout "$BOOT_TIMEOUT_S" >/dev/null ||
        die "tl$n did not boot (see $base/log)"
}

join_node() { # make node N a member of tl1's cluster
    local n="$1"
    if ctl 1 -q cluster_status --formatter json 2>/dev/null | grep -q "\"tl$n@localhost\""; then
        # already a member (restart of a node that was joined before)
        return 0
    fi
    ctl "$n" -q stop_app >/dev/null
    ctl "$n" -q join_cluster tl1@localhost >/dev/null
    ctl "$n" -q start_app >/dev/null
}

running_nodes() { # the running nodes as node 1..3 see them (first that answers)
    local n out
    for n in 1 2 3; do
        if [ -n "$(beam_pid "$n")" ]; then
            # a node that does not answer (yet) gives no output: ask the next one
            out=$(ctl "$n" -q eval 'io:format("~s~n", [string:join([atom_to_list(N) || N <- rabbit_nodes:all_running()], " ")]).' 2>/dev/null | head -1) || true
            if [ -n "$out" ]; then echo "$out"; return 0; fi
        fi
    done
    return 1
}

wait_rejoined() { # until node N is in the running set of the cluster
    local n="$1" deadline=$((SECONDS + BOOT_TIMEOUT_S))
    while true; do
        if running_nodes | tr ' ' '\n' | grep -qx "tl$n@localhost"; then return 0; fi
        [ $SECONDS -lt $deadline ] || die "tl$n did not rejoin the cluster"
        sleep 0.5
    done
}

cmd_start() {
    local n
    for n in 1 2 3; do
        local port
        port="$(amqp_port "$n")"
        if [ -z "$(beam_pid "$n" 2>/dev/null || true)" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "port $port is taken by another process"
        fi
    done
    prepare
    for n in 1 2 3; do start_node "$n"; done
    for n in 1 2 3; do wait_node "$n"; done
    join_node 2
    join_node 3
    for n in 1 2 3; do wait_rejoined "$n"; done
    echo "cluster up: amqp://guest:guest@127.0.0.1:5681/,amqp://guest:guest@127.0.0.1:5682/,amqp://guest:guest@127.0.0.1:5683/"
}

cmd_stop() {
    local n pid
    if [ -d "$DIR" ]; then
        for n in 3 2 1; do
            pid="$(beam_pid "$n")"
            [ -n "$pid" ] || continue
            ctl "$n" -q stop "$DIR/tl$n/pid" >/dev/null 2>&1 || kill -9 "$pid" 2>/dev/null || true
        done
        for n in 1 2 3; do
            pid="$(beam_pid "$n")"
            local deadline=$((SECONDS + 30))
            while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do
                if [ $SECONDS -ge $deadline ]; then kill -9 "$pid" 2>/dev/null || true; fi
                sleep 0.2
            done
        done
        rm -rf "$DIR"
    fi
    echo "cluster stopped"
}

cmd_status() {
    local n pid
    [ -d "$DIR" ] || {
        echo "no cluster ($DIR does not exist)"
        return 3
    }
    for n in 1 2 3; do
        pid="$(beam_pid "$n")"
        echo "tl$n@localhost amqp 127.0.0.1:$(amqp_port "$n") dist $(dist_port "$n") $([ -n "$pid" ] && echo "running pid $pid" || echo down)"
    done
    echo "running: $(running_nodes || echo none)"
}

cmd_kill() {
    local n pid
    n="$(index_of "${1:?kill NODE}")"
    pid="$(beam_pid "$n")"
    [ -n "$pid" ] || die "tl$n is not running"
    kill -9 "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    echo "killed tl$n@localhost (pid $pid)"
}

cmd_restart() {
    local n
    n="$(index_of "${1:?restart NODE}")"
    [ -d "$DIR/tl$n" ] || die "no cluster in $DIR (start it first)"
    start_node "$n"
    wait_node "$n"
    join_node "$n"
    wait_rejoined "$n"
    echo "tl$n@localhost rejoined"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    kill) cmd_kill "${2:-}" ;;
    restart) cmd_restart "${2:-}" ;;
    ctl)
        shift
        in_env 1 "$SBIN/rabbitmqctl" "$@"
        ;;
    queues)
        shift
        in_env 1 "$SBIN/rabbitmq-queues" "$@"
        ;;
    *)
        echo "usage: $0 start|stop|status|kill NODE|restart NODE|ctl ARGS|queues ARGS" >&2
        exit 2
        ;;
esac
