#!/usr/bin/env bash
# A one-node Slurm cluster on localhost for the examples' tests: munged, slurmctld -D and
# slurmd -D with a minimal slurm.conf, all under one folder, stopped by `stop`.
#   source tests/examples/slurm_cluster.sh; slurm_start DIR || skip; ...; slurm_stop
# Needs Debian's slurm-wlm and munge, and root (slurmd runs jobs as their user).
slurm_start() {
    SLURM_DIR=$1
    mkdir -p "$SLURM_DIR"/{state,spool,munge}
    for p in munged slurmctld slurmd sbatch squeue scontrol; do
        command -v "$p" > /dev/null || { echo "skipped: $p is not installed (apt-get install slurm-wlm munge)"; return 2; }
    done
    [ "$(id -u)" -eq 0 ] || { echo "skipped: a Slurm test cluster needs root"; return 2; }
    local key=/etc/munge/munge.key
    if [ ! -r "$key" ]; then
        key=$SLURM_DIR/munge/munge.key
        dd if=/dev/urandom of="$key" bs=1 count=128 2> /dev/null
        chmod 600 "$key"
    fi
    munged --force --socket="$SLURM_DIR/munge/munge.sock" --key-file="$key" \
        --pid-file="$SLURM_DIR/munge/munged.pid" --log-file="$SLURM_DIR/munge/munged.log" \
        --seed-file="$SLURM_DIR/munge/seed" || { echo "munged did not start"; return 1; }
    local port=$((20000 + RANDOM % 20000)) host cpus mem
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)
    cat > "$SLURM_DIR/slurm.conf" <<CONF
ClusterName=cdktest
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
AuthInfo=socket=$SLURM_DIR/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/slurmctld.log
SlurmdLogFile=$SLURM_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
    export SLURM_CONF=$SLURM_DIR/slurm.conf
    slurmctld -D -i > "$SLURM_DIR/slurmctld.out" 2>&1 &
    SLURMCTLD_PID=$!
    slurmd -D > "$SLURM_DIR/slurmd.out" 2>&1 &
    SLURMD_PID=$!
    local i
    for i in $(seq 1 90); do
        if sinfo -h -o %T 2> /dev/null | grep -q idle; then return 0; fi
        sleep 1
    done
    echo "the Slurm test cluster did not come up in 90 s:"
    tail -5 "$SLURM_DIR/slurmctld.log" "$SLURM_DIR/slurmd.log" 2> /dev/null
    return 1
}

slurm_stop() {
    [ -n "${SLURMD_PID:-}" ] && kill "$SLURMD_PID" 2> /dev/null
    [ -n "${SLURMCTLD_PID:-}" ] && kill "$SLURMCTLD_PID" 2> /dev/null
    [ -f "${SLURM_DIR:-/nonexistent}/munge/munged.pid" ] && kill "$(cat "$SLURM_DIR/munge/munged.pid")" 2> /dev/null
    wait 2> /dev/null
    return 0
}
