#!/usr/bin/env bash
# A real SLURM cluster on this machine (Debian's SLURM 22.05 + munge): one node, or N nodes.
#
#   slurm/local_cluster.sh start [--nodes N]   install what is missing, write slurm.conf, start munge,
#                                              slurmctld and one slurmd per node, wait for the nodes
#                                              to be idle (N = 1: node `localhost`; N > 1: nodes
#                                              node1..nodeN, N slurmd daemons on this host)
#   slurm/local_cluster.sh stop     stop the daemons this script started (by pid file)
#   slurm/local_cluster.sh status   exit 0 when every node answers, non-zero otherwise
#   slurm/local_cluster.sh env      print the environment lines users need
#
# Several nodes on one host: Debian builds SLURM with multiple-slurmd support, so each node is its
# own `slurmd -N NAME` with its own port, spool directory, pid file and log (%n in slurm.conf), all
# reached at 127.0.0.1. `start` with another node count than the running cluster restarts it.
#
# State (config, spool, logs, pid files, job completion log) lives in
# ${SRDD_SLURM_DIR:-<repo>/.slurm}. Ports: ${SRDD_SLURM_PORT:-6817} (slurmctld) and the next N
# (one slurmd per node).
# Accounting: no slurmdbd; slurmctld writes a job completion log (jobcomp/filetxt) that the
# sacct stand-in in slurm/bin/ reads, so submitit learns that a job died (see docs/slurm.md).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${SRDD_SLURM_DIR:-$REPO/.slurm}"
PORT="${SRDD_SLURM_PORT:-6817}"
# GNU nproc honours OMP_NUM_THREADS, which test and job environments often pin to 1.
CPUS="${SRDD_SLURM_CPUS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}"
CONF="$DIR/etc/slurm.conf"
BIN="$REPO/slurm/bin"
START_TIMEOUT_S="${SRDD_SLURM_START_TIMEOUT_S:-60}"
NODES=1
export SLURM_CONF="$CONF"

log() { echo "local_cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

ensure_packages() {
    local need=() cmd pkg
    for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
        cmd="${pair%%:*}"; pkg="${pair#*:}"
        command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
    done
    [ "${#need[@]}" -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "SLURM packages missing (${need[*]}) and not root: install them with apt"
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${need[@]}"
    }
}

# Memory the node advertises: all of it, so `--mem` requests up to the machine's size schedule.
real_memory_mb() { awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo; }

# Node names: `localhost` alone, or node1..nodeN.
node_names() {
    if [ "$NODES" -eq 1 ]; then echo localhost; else seq -f 'node%g' 1 "$NODES"; fi
}

# %n (the node name) in per-daemon paths once several slurmd share this host (after $1, default -).
node_suffix() { [ "$NODES" -eq 1 ] || echo "${1:--}%n"; }

# One line per node; with several, each slurmd gets its own port (PORT+i) and all share 127.0.0.1.
node_lines() {
    local i=0 name
    for name in $(node_names); do
        i=$((i + 1))
        if [ "$NODES" -eq 1 ]; then
            echo "NodeName=$name NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$(real_memory_mb) State=UNKNOWN"
        else
            echo "NodeName=$name NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((PORT + i)) CPUs=$CPUS" \
                "RealMemory=$(real_memory_mb) State=UNKNOWN"
        fi
    done
}

# The pid file of one node's slurmd (as slurm.conf names it).
slurmd_pid_file() { if [ "$NODES" -eq 1 ]; then echo "$DIR/run/slurmd.pid"; else echo "$DIR/run/slurmd-$1.pid"; fi; }

write_conf() {
    mkdir -p "$DIR"/{etc,state,spool,log,run,jobs}
    local tmp="$CONF.tmp.$$"
    cat >"$tmp" <<EOF
# Written by slurm/local_cluster.sh; regenerated on every start while the cluster is down.
ClusterName=srdd-local
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool$(node_suffix /)
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd$(node_suffix).pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd$(node_suffix).log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in containers: track processes by parent pid, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Final job states go to a text log; slurm/bin/sacct answers from it (no slurmdbd needed).
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
MailProg=/bin/true
SchedulerType=sched/backfill
# Schedule a batch job as soon as it is submitted (the default waits up to 3 s to batch them).
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
# Short timeouts: a dead daemon or a cancelled job is noticed within seconds, not minutes.
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
InactiveLimit=0
KillWait=5
Waittime=0
# Finished jobs stay visible to scontrol for an hour (the sacct stand-in prefers that view).
MinJobAge=3600
MaxArraySize=10001
$(node_lines)
PartitionName=local Nodes=$(node_names | paste -sd,) Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    mv "$tmp" "$CONF"
    cat >"$DIR/env.sh" <<EOF
export SLURM_CONF=$CONF
export PATH=$BIN:\$PATH
EOF
}

# True while a process runs; a zombie (exited, not yet reaped by a container's pid 1) counts as gone.
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }

# pid from a pid file if that process is alive and is the named program (no pid reuse accidents).
live_pid() {
    local file="$1" name="$2" pid
    [ -s "$file" ] || return 1
    pid="$(cat "$file")"
    alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
    echo "$pid"
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    munge_works && return 0
    [ -s /etc/munge/munge.key ] || {
        log "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    }
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    runuser -u munge -- /usr/sbin/munged 9>&-  # daemons must not inherit the start lock
    # Ours to stop later: the pid munged wrote, copied into our state dir.
    cp /run/munge/munged.pid "$DIR/run/munged.pid"
    for _ in $(seq 50); do munge_works && return 0; sleep 0.1; done
    die "munged started but credentials do not round-trip"
}

configured_cpus() { sed -n 's/^NodeName=.* CPUs=\([0-9]*\).*/\1/p' "$CONF" 2>/dev/null | head -n1; }

configured_nodes() { grep -c '^NodeName=' "$CONF" 2>/dev/null || true; }

node_state() { sinfo -h -n "$1" -o %T 2>/dev/null | head -n1; }

slurmds_up() {
    local name
    for name in $(node_names); do live_pid "$(slurmd_pid_file "$name")" slurmd >/dev/null || return 1; done
}

is_up() {
    live_pid "$DIR/run/slurmctld.pid" slurmctld >/dev/null && slurmds_up && scontrol ping >/dev/null 2>&1
}

show_logs() { tail -n 20 "$DIR/log/slurmctld.log" "$DIR"/log/slurmd*.log >&2 || true; }

wait_idle() {
    local deadline=$((SECONDS + START_TIMEOUT_S)) state="" name pending=""
    while [ "$SECONDS" -lt "$deadline" ]; do
        pending=""
        for name in $(node_names); do
            state="$(node_state "$name")"
            case "$state" in
                idle|mixed|allocated|completing) ;;
                down*|drain*|fail*) scontrol update nodename="$name" state=resume >/dev/null 2>&1 || true
                                    pending+=" $name:$state" ;;
                *) pending+=" $name:$state" ;;
            esac
        done
        [ -z "$pending" ] && return 0
        sleep 0.5
    done
    log "node states after ${START_TIMEOUT_S}s:${pending}; last log lines:"
    show_logs
    die "node did not become idle"
}

# Something already accepts connections on the port: another checkout's cluster, most likely. Our
# slurmctld could not bind it, and scontrol would silently talk to that other controller.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_ports_free() {
    local port owner
    for port in $(seq "$PORT" "$((PORT + NODES))"); do
        port_in_use "$port" || continue
        owner="$(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'users:.*' | head -n1 || true)"
        die "port $port is taken${owner:+ by $owner} (another local cluster? stop it with its own" \
            "slurm/local_cluster.sh stop, or set SRDD_SLURM_PORT to a free port)"
    done
}

print_env() {
    echo "export SLURM_CONF=$CONF"
    echo "export PATH=$BIN:\$PATH"
}

cmd_start() {
    ensure_packages
    mkdir -p "$DIR"
    # One starter at a time: several test sessions may race to start the same cluster.
    exec 9>"$DIR/lock"
    flock -w 120 9 || die "could not lock $DIR/lock"
    if [ "$(configured_nodes)" = "$NODES" ] && is_up && [ "$(configured_cpus)" = "$CPUS" ]; then
        wait_idle
        log "already running ($DIR)"
        print_env
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || die "starting the local cluster needs root (slurmd runs jobs as their user)"
    cmd_stop_locked
    check_ports_free
    write_conf
    start_munge
    slurmctld -f "$CONF" -i 9>&-
    local name
    for name in $(node_names); do slurmd -f "$CONF" -N "$name" 9>&-; done
    for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
    wait_idle
    is_up || { show_logs; die "daemons exited after start"; }
    log "up: node(s) $(node_names | paste -sd' '), $CPUS CPUs each, state dir $DIR"
    print_env
}

stop_one() {
    local file="$1" name="$2" pid
    pid="$(live_pid "$file" "$name")" || { rm -f "$file"; return 0; }
    kill "$pid"
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -9 "$pid"; fi
    rm -f "$file"
}

cmd_stop_locked() {
    local file
    for file in "$DIR"/run/slurmd*.pid; do if [ -e "$file" ]; then stop_one "$file" slurmd; fi; done
    stop_one "$DIR/run/slurmctld.pid" slurmctld
    stop_one "$DIR/run/munged.pid" munged
}

cmd_stop() {
    [ -d "$DIR" ] || { log "nothing to stop ($DIR does not exist)"; return 0; }
    exec 9>"$DIR/lock"
    flock -w 120 9 || die "could not lock $DIR/lock"
    cmd_stop_locked
    log "stopped ($DIR)"
}

cmd_status() {
    local ctld="down" slurmd nodes="" name state
    if [ -f "$CONF" ]; then NODES="$(configured_nodes)"; fi
    [ "${NODES:-0}" -ge 1 ] || NODES=1
    live_pid "$DIR/run/slurmctld.pid" slurmctld >/dev/null && ctld="running"
    for name in $(node_names); do
        slurmd="down"
        live_pid "$(slurmd_pid_file "$name")" slurmd >/dev/null && slurmd="running"
        state="unknown"
        if [ -f "$CONF" ] && [ "$ctld" = running ]; then state="$(node_state "$name")"; fi
        nodes+="  slurmd: $slurmd  node $name: ${state:-unknown}"
    done
    echo "slurmctld: $ctld${nodes}  conf: $CONF"
    is_up
}

usage() { echo "usage: $0 start [--nodes N] | stop | status | env" >&2; exit 2; }

command="${1:-}"
[ $# -gt 0 ] && shift
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) [ $# -ge 2 ] || usage; NODES="$2"; shift 2 ;;
        --nodes=*) NODES="${1#--nodes=}"; shift ;;
        *) usage ;;
    esac
done
[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "--nodes must be a positive integer, got '$NODES'"

case "$command" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) print_env ;;
    *) usage ;;
esac
