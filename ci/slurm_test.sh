#!/usr/bin/env bash
# Real Slurm test for the sparse-frontier workflow (issue 7, point 4).
#
# On a fresh Debian 12 machine, as root, this script
#   1. installs Slurm (and munge; MariaDB + slurmdbd with SF_SLURM_ACCOUNTING=1) from Debian's packages,
#   2. starts a single-node cluster by hand (no systemd needed): munged, [mariadbd, slurmdbd],
#      slurmctld, slurmd; the node advertises fake GPUs (gres.conf File=/dev/null...) so GPU requests schedule,
#   3. runs the default workflow through `--profile profiles/slurm` with the fast-status override
#      `--workflow-profile profiles/slurm-test`, in a copy of the working tree,
#   4. checks that every job of the DAG went through Slurm and completed, that every output exists and is
#      non-empty, and that a rerun has nothing to do,
#   5. preemption: cancels a running inference job with scancel once it has finished some batches, resubmits,
#      and checks that the new job takes exactly those batches from the inference cache and computes the rest,
#   6. runs tests/slurm/failing/Snakefile: a rule that fails under Slurm makes Snakemake exit non-zero and
#      name the rule; the rerun completes without redoing the job that had finished; a rule asking for two
#      GPUs gets two (fake) GPUs,
#   7. stops every daemon it started by PID and restores /etc/slurm, also on failure or interrupt (trap).
#
# Re-running is safe: leftovers of an earlier, killed run (daemons recorded in $STATE/pids) are stopped first.
#
# Usage:  sudo ci/slurm_test.sh [extra snakemake arguments for the default-workflow run]
# Settings (environment):
#   SF_SLURM_STATE=/tmp/sparse-frontier-slurm   state, logs and the working copy (logs are kept on exit)
#   SF_SLURM_ACCOUNTING=0                       1: run MariaDB + slurmdbd and let the executor poll with sacct
#   SF_SLURM_GPUS=2                             fake GPUs on the node
#   SF_SLURM_CPUS=max(nproc,8)                  CPUs the node advertises (see slurm_conf below)
#   SF_SLURM_RUN_TIMEOUT=2400                   seconds allowed for the default-workflow run
#   SF_SLURM_SOURCE=<repo root>                 the tree to copy and run (default: this repository)
#   SF_SLURM_KEEP_WORK=0                        1: keep the working copy of the workflow after the run
#   SF_SLURM_INFERENCE_GPU=1                    1: the inference jobs ask for a (fake) GPU
#                                               (tests/slurm/inference_on_gpu.yaml); 0: the tiny study alone
#   SF_SLURM_STEPS="workflow preempt failing"   the steps 3-4, 5 and 6 to run (the cluster always comes up)
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${SF_SLURM_STATE:-/tmp/sparse-frontier-slurm}
ACCOUNTING=${SF_SLURM_ACCOUNTING:-0}
FAKE_GPUS=${SF_SLURM_GPUS:-2}
REAL_CPUS=$(nproc)
CPUS=${SF_SLURM_CPUS:-$((REAL_CPUS > 8 ? REAL_CPUS : 8))}
RUN_TIMEOUT=${SF_SLURM_RUN_TIMEOUT:-2400}
SOURCE=${SF_SLURM_SOURCE:-$REPO}
KEEP_WORK=${SF_SLURM_KEEP_WORK:-0}
INFERENCE_GPU=${SF_SLURM_INFERENCE_GPU:-1}
STEPS=" ${SF_SLURM_STEPS:-workflow preempt failing} "
NODE=$(hostname -s)
CLUSTER=sparsefrontier
MARKER="# managed by sparse-frontier ci/slurm_test.sh"
POLICY_RC="" # set while our policy-rc.d blocks init scripts during apt-get install
T0=$(date +%s)

log() { printf '[slurm-test %4ds] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# ---------------------------------------------------------------- daemons, started and stopped by PID
# Every daemon runs in the foreground (-D / no fork) as a child of this script; its PID goes to
# $STATE/pids/<name>.pid together with its executable, so a later run can stop exactly what an earlier,
# killed run left behind and nothing else.
start_daemon() { # name logfile executable [wrapper...] executable args...: the wrapper must exec it
    local name=$1 logfile=$2 exe
    exe=$(readlink -f "$3")
    shift 3
    "$@" >>"$logfile" 2>&1 &
    local pid=$!
    echo "$pid $exe" >"$STATE/pids/$name.pid"
    log "started $name (pid $pid)"
}

stop_pidfile() { # pidfile: stop the process recorded there if it is still the same program
    local file=$1 pid exe
    read -r pid exe <"$file" || return 0
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null &&
        [[ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" == "$exe" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
        log "stopped $(basename "$file" .pid) (pid $pid)"
    fi
    rm -f "$file"
}

stop_all() {
    [[ -d "$STATE/pids" ]] || return 0
    # Jobs first (their slurmstepd would outlive slurmd), then the daemons in reverse start order.
    if [[ -f "$STATE/pids/slurmctld.pid" ]] && command -v scancel >/dev/null; then
        timeout 10 scancel --full --quiet --user=root 2>/dev/null || true
        for _ in $(seq 25); do
            [[ -z "$(timeout 5 squeue --noheader --states=RUNNING,COMPLETING 2>/dev/null)" ]] && break
            sleep 0.2
        done
    fi
    for name in slurmd slurmctld slurmdbd mariadbd munged; do
        [[ -f "$STATE/pids/$name.pid" ]] && stop_pidfile "$STATE/pids/$name.pid"
    done
    return 0
}

# /etc/slurm/{slurm,gres}.conf must be real paths: the jobstep plugin drops SLURM_CONF before its inner srun.
# We symlink ours there and put back whatever was there before.
install_conf() { # name
    local dest=/etc/slurm/$1
    mkdir -p /etc/slurm
    if [[ -e "$dest" || -L "$dest" ]] && ! grep -qF "$MARKER" "$dest" 2>/dev/null; then
        mv "$dest" "$STATE/backup/$1"
    fi
    ln -sfn "$STATE/etc/$1" "$dest"
}

restore_confs() {
    for name in slurm.conf gres.conf slurmdbd.conf; do
        local dest=/etc/slurm/$name
        if [[ -L "$dest" && "$(readlink "$dest")" == "$STATE/etc/$name" ]]; then rm -f "$dest"; fi
        if [[ -e "$STATE/backup/$name" ]]; then mv "$STATE/backup/$name" "$dest"; fi
    done
}

show_logs() {
    for f in "$STATE"/logs/*.log; do
        [[ -s "$f" ]] || continue
        echo "----- last lines of $f" >&2
        tail -n 25 "$f" >&2
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    [[ $rc -ne 0 ]] && show_logs
    [[ -n "$POLICY_RC" ]] && rm -f "$POLICY_RC"
    stop_all
    restore_confs
    [[ "$KEEP_WORK" == 1 ]] || rm -rf "$STATE/work" "$STATE/preempt" "$STATE/failing"
    if [[ $rc -eq 0 ]]; then log "PASSED in $(($(date +%s) - T0)) s (logs in $STATE/logs)"; else
        log "FAILED with status $rc after $(($(date +%s) - T0)) s (logs in $STATE/logs)"; fi
    exit "$rc"
}

wait_for() { # seconds description command...: poll until the command succeeds
    local limit=$1 what=$2
    shift 2
    for _ in $(seq $((limit * 2))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        for f in "$STATE"/pids/*.pid; do
            local pid
            read -r pid _ <"$f"
            kill -0 "$pid" 2>/dev/null || die "$(basename "$f" .pid) died while waiting for $what"
        done
        sleep 0.5
    done
    die "timed out after ${limit}s waiting for $what"
}

# The run is one function that bash reads whole before it starts, so editing this file during a
# run cannot change what the run executes.
main() {
    # ---------------------------------------------------------------- setup
    [[ $EUID -eq 0 ]] || die "run as root: it installs Debian packages and starts Slurm's daemons (sudo $0)."
    command -v snakemake >/dev/null || die "snakemake is not on the PATH; install the project first (pip install -e '.[slurm]')."
    python3 -c "import snakemake_executor_plugin_slurm" 2>/dev/null ||
        die "the Slurm executor plugin is missing; install it with pip install -e '.[slurm]'."
    [[ -f "$SOURCE/Snakefile" || -f "$SOURCE/workflow/Snakefile" ]] || die "no Snakefile under $SOURCE (SF_SLURM_SOURCE)."
    for step in $STEPS; do
        [[ " workflow preempt failing " == *" $step "* ]] || die "unknown step '$step' in SF_SLURM_STEPS; the steps are workflow, preempt and failing."
    done

    if [[ -d "$STATE/pids" ]]; then
        log "stopping what an earlier run left behind"
        stop_all
        restore_confs
    fi
    rm -rf "$STATE"
    mkdir -p "$STATE"/{etc,pids,logs,backup,ctld,spool,run}
    trap cleanup EXIT INT TERM

    packages=(slurmctld slurmd slurm-client munge)
    [[ "$ACCOUNTING" == 1 ]] && packages+=(slurmdbd mariadb-server)
    missing=()
    for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
    if ((${#missing[@]})); then
        log "installing ${missing[*]} from Debian"
        export DEBIAN_FRONTEND=noninteractive
        # Keep the packages' init scripts from starting daemons of their own: this script starts them.
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            POLICY_RC=/usr/sbin/policy-rc.d
            printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC" && chmod +x "$POLICY_RC"
        fi
        timeout 600 apt-get update -qq >"$STATE/logs/apt.log" 2>&1 || die "apt-get update failed (see $STATE/logs/apt.log)"
        installed=0
        timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$STATE/logs/apt.log" 2>&1 && installed=1
        if [[ -n "$POLICY_RC" ]]; then rm -f "$POLICY_RC"; POLICY_RC=""; fi
        ((installed)) || die "apt-get install ${missing[*]} failed (see $STATE/logs/apt.log)"
    fi
    if pgrep -x slurmctld >/dev/null && [[ ! -f "$STATE/pids/slurmctld.pid" ]]; then
        die "a slurmctld that this script did not start is running; stop it first (it would clash on port 6817)."
    fi

    # ---------------------------------------------------------------- munge
    if timeout 5 bash -c 'munge -n | unmunge' >/dev/null 2>&1; then
        log "using the munged that is already running"
    else
        mkdir -p /run/munge /var/lib/munge /var/log/munge
        chown munge:munge /run/munge /var/lib/munge /var/log/munge
        if [[ ! -s /etc/munge/munge.key ]]; then mungekey --create --keyfile=/etc/munge/munge.key; fi
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
        touch "$STATE/logs/munged.log" && chown munge "$STATE/logs/munged.log"
        start_daemon munged "$STATE/logs/munged.log" /usr/sbin/munged \
            setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground --force \
            --log-file="$STATE/logs/munged.log"
        wait_for 20 "munged" bash -c 'munge -n | unmunge'
    fi

    # ---------------------------------------------------------------- accounting (optional)
    accounting_lines="AccountingStorageType=accounting_storage/none"
    if [[ "$ACCOUNTING" == 1 ]]; then
        db=$STATE/mysql
        mkdir -p "$db"
        mariadb-install-db --user=root --datadir="$db/data" --auth-root-authentication-method=socket \
            >"$STATE/logs/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (see $STATE/logs/mariadb-install.log)"
        # The default socket path, where slurmdbd's client library looks for a server on localhost.
        mkdir -p /run/mysqld
        start_daemon mariadbd "$STATE/logs/mariadbd.log" /usr/sbin/mariadbd /usr/sbin/mariadbd --no-defaults --user=root \
            --datadir="$db/data" --socket=/run/mysqld/mysqld.sock --pid-file="$db/mysqld.pid" --skip-networking \
            --log-error="$STATE/logs/mariadbd.log"
        wait_for 60 "mariadbd" mariadb --socket=/run/mysqld/mysqld.sock -e "select 1"
        cat >"$STATE/etc/slurmdbd.conf" <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/logs/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=root
StorageLoc=slurm_acct_db
EOF
        chmod 600 "$STATE/etc/slurmdbd.conf"
        install_conf slurmdbd.conf
        start_daemon slurmdbd "$STATE/logs/slurmdbd.log" /usr/sbin/slurmdbd /usr/sbin/slurmdbd -D
        # GPUs tracked as a TRES (needs slurmdbd): a job's allocation (scontrol's TRES=) lists them.
        accounting_lines=$'AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost'
        accounting_lines+=$'\nAccountingStorageTRES=gres/gpu\nJobAcctGatherType=jobacct_gather/linux'
    fi

    # ---------------------------------------------------------------- slurm.conf, gres.conf
    mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    # Fake GPUs: gres.conf needs one distinct file per device (a missing File= makes the node INVAL).
    mkdir -p "$STATE/dev"
    for i in $(seq 0 $((FAKE_GPUS - 1))); do touch "$STATE/dev/fakegpu$i"; done
    gpu_files="$STATE/dev/fakegpu[0-$((FAKE_GPUS - 1))]"
    # The node advertises CPUS (default at least 8) even on a 2-core machine, so that the real profile's
    # cpus_per_task requests schedule unchanged; config_overrides makes slurmd accept a config larger than the
    # hardware. The test profile's `jobs` keeps the real concurrency low.
    cat >"$STATE/etc/slurm.conf" <<EOF
$MARKER
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/logs/slurmctld.log
SlurmdLogFile=$STATE/logs/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
# squeue must still list finished jobs when the executor polls (MinJobAge >= 3 x its status interval, which
# grows to 180 s) and when this script checks their final states after the run.
MinJobAge=3600
ReturnToService=2
SlurmdParameters=config_overrides
GresTypes=gpu
$accounting_lines
NodeName=$NODE CPUs=$CPUS RealMemory=$mem_mb Gres=gpu:$FAKE_GPUS State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    printf '%s\nNodeName=%s Name=gpu File=%s\n' "$MARKER" "$NODE" "$gpu_files" >"$STATE/etc/gres.conf"
    install_conf slurm.conf
    install_conf gres.conf

    if [[ "$ACCOUNTING" == 1 ]]; then
        # The cluster, an account and root's association exist before slurmctld registers.
        wait_for 60 "slurmdbd (sacctmgr)" sacctmgr -n show cluster
        sacctmgr -i add cluster "$CLUSTER" >>"$STATE/logs/sacctmgr.log" 2>&1
        sacctmgr -i add account sparsefrontier Cluster="$CLUSTER" Description=ci Organization=ci \
            >>"$STATE/logs/sacctmgr.log" 2>&1
        sacctmgr -i add user root Account=sparsefrontier Cluster="$CLUSTER" >>"$STATE/logs/sacctmgr.log" 2>&1
    fi
    start_daemon slurmctld "$STATE/logs/slurmctld.log" /usr/sbin/slurmctld /usr/sbin/slurmctld -D -i
    wait_for 60 "slurmctld (scontrol ping)" bash -c 'scontrol ping | grep -q UP'
    start_daemon slurmd "$STATE/logs/slurmd.log" /usr/sbin/slurmd /usr/sbin/slurmd -D
    node_idle() { [[ "$(sinfo -h -n "$NODE" -o %T)" == idle* ]]; }
    wait_for 60 "node $NODE to be idle (sinfo)" node_idle
    log "cluster up: $(sinfo -h -o '%P %D %T %c CPUs %m MB %G')"

    # ---------------------------------------------------------------- the workflow, in a copy of the tree
    unset SNAKEMAKE_PROFILE # only the profiles named below
    snake() { # logfile args...: run snakemake under a time limit, return its status
        local logfile=$1
        shift
        set +e
        timeout --kill-after=30 "$RUN_TIMEOUT" snakemake "$@" >"$logfile" 2>&1
        local rc=$?
        set -e
        return $rc
    }
    submitted_jobids() { grep -oE 'submitted with SLURM jobid [0-9]+' "$1" | awk '{print $NF}'; }
    copy_tree() { # folder: tracked files plus untracked ones git does not ignore, as a checkout would hold
        mkdir -p "$1"
        (cd "$SOURCE" && { git ls-files -z --cached --others --exclude-standard 2>/dev/null || find . -type f -print0; } |
            tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$1"
    }
    profile_args=(--profile "$REPO/profiles/slurm" --workflow-profile "$REPO/profiles/slurm-test")
    # The tiny study (no model download); with INFERENCE_GPU=1 its inference jobs also ask Slurm for one GPU.
    config_args=(--configfile config/tiny.yaml)
    if [[ "$INFERENCE_GPU" == 1 ]]; then
        config_args=(--configfile config/tiny.yaml "$REPO/tests/slurm/inference_on_gpu.yaml")
    fi
    # With accounting, poll through sacct as a real cluster would (the test profile says squeue).
    [[ "$ACCOUNTING" == 1 ]] && profile_args+=(--slurm-status-command sacct)

    if [[ "$STEPS" == *" workflow "* ]]; then
    copy_tree "$STATE/work"
    cd "$STATE/work"
    log "default workflow under Slurm (limit ${RUN_TIMEOUT}s): snakemake ${profile_args[*]} $*"
    run1=$STATE/logs/workflow-run.log
    snake "$run1" "${profile_args[@]}" "${config_args[@]}" "$@" || die "the default workflow failed under Slurm (status $?; see $run1)"
    mapfile -t jobids < <(submitted_jobids "$run1")
    ((${#jobids[@]} > 0)) || die "no job was submitted to Slurm (see $run1)"
    planned=$(grep -oE '^total +[0-9]+' "$run1" | head -1 | awk '{print $2}')
    remote=$(grep -cE '^\s*rule [A-Za-z0-9_]+:' "$run1" || true)  # grouped jobs are indented
    localrules=$(grep -cE '^localrule [A-Za-z0-9_]+:' "$run1" || true)
    finished=$(grep -cE '^Finished jobid' "$run1" || true)
    log "workflow done: $planned jobs planned, $finished finished; $remote ran in ${#jobids[@]} Slurm jobs, $localrules locally"
    [[ -n "$planned" && "$finished" == "$planned" && "$((remote + localrules))" == "$planned" ]] ||
        die "planned $planned jobs, finished $finished, ran $remote under Slurm and $localrules locally (see $run1)"
    ((remote >= ${#jobids[@]})) || die "more Slurm jobs (${#jobids[@]}) than workflow jobs sent to Slurm ($remote)"
    # Final state of every Slurm job (sacct with accounting, squeue otherwise: MinJobAge keeps finished
    # jobs listed), in one query, retried: on a loaded machine a single RPC can time out.
    states=$STATE/logs/job-states.txt
    for _ in 1 2 3 4 5; do
        if [[ "$ACCOUNTING" == 1 ]]; then
            sacct -X -n -P -o JobIDRaw,State >"$states" 2>>"$STATE/logs/job-states.err" && break
        else
            squeue --noheader --states=all -o '%i|%T' >"$states" 2>>"$STATE/logs/job-states.err" && break
        fi
        sleep 3
    done
    for id in "${jobids[@]}"; do
        state=$(awk -F'|' -v id="$id" '$1 == id {print $2}' "$states")
        [[ "$state" == COMPLETED ]] || die "Slurm job $id is '$state', not COMPLETED (see $states)"
    done
    if [[ "$INFERENCE_GPU" == 1 ]]; then
        # The inference jobs (their Slurm logs sit under rule_inference/) were each given one GPU.
        mapfile -t inference_ids < <(grep -oE 'SLURM jobid [0-9]+ \(log: [^)]*/rule_inference/' "$run1" | awk '{print $3}')
        ((${#inference_ids[@]} > 0)) || die "no inference job went to Slurm (see $run1)"
        for id in "${inference_ids[@]}"; do
            # With accounting, the allocation lists the GPU (TRES=...gres/gpu=1); without, the job's
            # GPU request (TresPerJob=gres:gpu:1), which Slurm only starts once the node grants it.
            gpus=$(scontrol show job -o "$id" 2>/dev/null | grep -oE '(^| )(TRES|TresPerJob)=[^ ]*' | tr '\n' ' ' || true)
            [[ "$gpus" =~ (gres/gpu=1|gres:gpu:1)($|[ ,]) ]] || die "inference job $id shows '$gpus', not one GPU"
        done
        log "the ${#inference_ids[@]} inference jobs each ran with one GPU of the node's fake GPUs"
    fi
    # Every output of the DAG exists and is not empty.
    snakemake --summary "${profile_args[@]}" "${config_args[@]}" "$@" >"$STATE/logs/summary.tsv" 2>"$STATE/logs/summary.log" ||
        die "snakemake --summary failed (see $STATE/logs/summary.log)"
    checked=0
    # Columns: output_file date rule log-file(s) status plan; empty fields, so no `read` on tabs.
    while IFS=$'\x1f' read -r file rule status; do
        [[ -z "$file" ]] && continue
        [[ -e "$file" ]] || die "output $file of rule $rule is missing"
        if [[ -f "$file" && ! -s "$file" ]]; then die "output $file of rule $rule is empty"; fi
        [[ "$status" == ok ]] || die "output $file of rule $rule has status '$status' after the run"
        checked=$((checked + 1))
    done < <(awk -F'\t' 'NR > 1 {print $1 "\x1f" $3 "\x1f" $5}' "$STATE/logs/summary.tsv")
    ((checked > 0)) || die "snakemake --summary listed no outputs"
    log "all $checked outputs exist and are up to date"
    rerun=$STATE/logs/workflow-rerun.log
    snake "$rerun" "${profile_args[@]}" "${config_args[@]}" "$@" || die "the rerun of the finished workflow failed (see $rerun)"
    grep -q "Nothing to be done" "$rerun" && [[ -z "$(submitted_jobids "$rerun")" ]] ||
        die "the rerun of the finished workflow did work again (see $rerun)"
    log "rerun: nothing to be done"
    fi

    # ---------------------------------------------------------------- preemption: scancel, resubmit, resume
    if [[ "$STEPS" == *" preempt "* ]]; then
    copy_tree "$STATE/preempt"
    cd "$STATE/preempt"
    pre_args=("${profile_args[@]}" --configfile config/tiny.yaml "$REPO/tests/slurm/preempt.yaml" --retries 0)
    target=results/predictions/tiny-qwen2/2048/shard0.parquet
    inference_log=results/logs/inference/tiny-qwen2/2048/shard0.log
    cached_batches() { find results/cache/inference -name '[!.]*.parquet' 2>/dev/null | wc -l; }
    pre_log=$STATE/logs/preempt-run.log
    log "preemption: the inference job of $target is cancelled once it has cached 3 batches"
    timeout --kill-after=30 "$RUN_TIMEOUT" snakemake "${pre_args[@]}" "$target" >"$pre_log" 2>&1 &
    snake_pid=$!
    for ((i = 0; ; i++)); do
        (($(cached_batches) >= 3)) && break
        kill -0 "$snake_pid" 2>/dev/null || die "the run ended before its inference job cached 3 batches (see $pre_log)"
        ((i < RUN_TIMEOUT * 5)) || die "no 3 batches were cached in ${RUN_TIMEOUT}s (see $pre_log)"
        sleep 0.2
    done
    jobid=$(grep -oE 'SLURM jobid [0-9]+ \(log: [^)]*/rule_inference/' "$pre_log" | awk '{print $3}' | tail -n 1)
    [[ -n "$jobid" ]] || die "no inference job was submitted to Slurm (see $pre_log)"
    scancel "$jobid"
    set +e
    wait "$snake_pid"
    pre_rc=$?
    set -e
    ((pre_rc != 0)) || die "Snakemake exited 0 although its inference job $jobid was cancelled (see $pre_log)"
    at_cancel=$(cached_batches)
    [[ ! -e "$target" ]] || die "the cancelled inference job left its output $target behind"
    log "cancelled Slurm job $jobid with $at_cancel batches in the inference cache; resubmitting"
    resume_log=$STATE/logs/preempt-resume.log
    snake "$resume_log" "${pre_args[@]}" "$target" || die "the resubmitted run failed (see $resume_log)"
    [[ -s "$target" ]] || die "the resubmitted run did not write $target"
    # The resubmitted job's own line: how many prompts x cells it took from the cache, and how many it computed.
    read -r from_cache total computed < <(grep -oE '[0-9]+ of [0-9]+ prompts x cells are in the cache; computing [0-9]+' \
        "$inference_log" | tail -n 1 | awk '{print $1, $3, $NF}') || true
    [[ "$from_cache" == "$at_cancel" && "$computed" == $((total - at_cancel)) ]] ||
        die "the resubmitted job took $from_cache of $total from the cache and computed $computed; expected $at_cancel and $((total - at_cancel)) (see $inference_log)"
    log "preemption: the resubmitted job took the $at_cancel finished batches from the cache and computed the other $computed"
    fi

    # ---------------------------------------------------------------- failure, resume, multi-GPU
    if [[ "$STEPS" == *" failing "* ]]; then
    fail_dir=$STATE/failing
    mkdir -p "$fail_dir"
    cd "$fail_dir"
    fail_args=(--snakefile "$REPO/tests/slurm/failing/Snakefile" "${profile_args[@]}" --retries 0)
    touch FAIL # the rule `flaky` fails while this file exists
    fail_log=$STATE/logs/failing-run.log
    if snake "$fail_log" "${fail_args[@]}"; then die "the workflow with a failing rule exited 0 (see $fail_log)"; fi
    grep -q "Error in rule flaky" "$fail_log" || die "Snakemake did not name the failing rule 'flaky' (see $fail_log)"
    [[ -s out/prepared.txt ]] || die "the job before the failure did not finish (see $fail_log)"
    prepared_mtime=$(stat -c %Y out/prepared.txt)
    log "failing rule: Snakemake exited non-zero and named rule flaky"
    rm -f FAIL
    resume_log=$STATE/logs/failing-resume.log
    snake "$resume_log" "${fail_args[@]}" || die "the rerun after the failure did not complete (see $resume_log)"
    [[ "$(stat -c %Y out/prepared.txt)" == "$prepared_mtime" ]] || die "the rerun redid the finished job 'prepare'"
    grep -qE '^rule prepare:' "$resume_log" && die "the rerun submitted the finished job 'prepare' again"
    [[ "$(submitted_jobids "$resume_log" | wc -l)" == 1 ]] || die "the rerun should submit exactly one job (see $resume_log)"
    # `prepare` asked for 2 GPUs; Slurm must have granted two fake GPUs to its job.
    gpus=$(sed -n 's/^gpus_on_node=//p' out/prepared.txt)
    [[ "$gpus" == 2 ]] || die "a job asking for gpu=2 was given '$gpus' GPUs by Slurm (see out/prepared.txt)"
    log "rerun after failure: only 'flaky' ran again; the gpu=2 job was given $gpus GPUs"
    fi
}

main "$@"
