#!/usr/bin/env bash
# A one-node SLURM (slurmctld + slurmd) and its munged, private to one folder, on loopback only.
#
#   tests/helpers/slurm_local.sh start DIR   # install where missing, start, wait for an idle node
#   tests/helpers/slurm_local.sh stop DIR    # stop every daemon it started (by PID), remove the netns
#   tests/helpers/slurm_local.sh exec DIR CMD...   # run CMD where SLURM is reachable (its netns)
#
# Needs root (network namespace, daemons) and, where slurm-wlm or munge is missing, apt-get.
# Exit status 2 means "cannot run here" (not root, no apt-get, install failed), with the reason on
# stderr: the test suite skips on it. Anything else non-zero is a real failure.
#
# The daemons listen on every interface and have no bind option, so they run in a network
# namespace with only loopback: `ip netns add`, then inside it `lo` up with 127.0.0.2/8 too
# (glibc's AI_ADDRCONFIG ignores a host with 127.0.0.1 alone, and slurmd then cannot resolve the
# controller). They are started with `nsenter --net=`, not `ip netns exec`, which remounts /sys
# and breaks slurmd's cgroup probing. proctrack/linuxproc and task/none: no cgroups needed.
# munged runs as the munge user on its own socket in /run (a system munged is left alone).
# Clients (sbatch, squeue, scancel, and a Dask scheduler that job workers must reach) run in the
# namespace too: `slurm_local.sh exec DIR ...`, with SLURM_CONF pointing at DIR/slurm.conf.
set -euo pipefail

cmd="${1:?usage: $0 start|stop|exec DIR [CMD...]}"
DIR="$(realpath -m "${2:?usage: $0 start|stop|exec DIR [CMD...]}")"
shift 2
NS="wsi-slurm-$(printf '%s' "${DIR}" | md5sum | cut -c1-8)"
NSPATH="/var/run/netns/${NS}"
# munged's socket folder must be reachable by the munge user, whatever DIR's parents allow.
MUNGE="/run/${NS}-munge"

cannot() { echo "slurm_local: cannot run here: $*" >&2; exit 2; }

install_missing() {
  local missing=()
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    || missing+=(slurm-wlm)
  command -v munged >/dev/null || missing+=(munge)
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null || cannot "${missing[*]} missing and no apt-get to install it"
  echo "slurm_local: installing ${missing[*]} (apt-get)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -q >"${DIR}/apt.log" 2>&1 \
    || cannot "apt-get update failed (no package mirror reachable?), see ${DIR}/apt.log"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
    >>"${DIR}/apt.log" 2>&1 || cannot "apt-get install ${missing[*]} failed, see ${DIR}/apt.log"
}

in_ns() { SLURM_CONF="${DIR}/slurm.conf" nsenter --net="${NSPATH}" "$@"; }

start() {
  [ "$(id -u)" -eq 0 ] || cannot "needs root (network namespace and daemons), running as uid $(id -u)"
  command -v ip >/dev/null && command -v nsenter >/dev/null || cannot "needs ip (iproute2) and nsenter"
  mkdir -p "${DIR}"
  install_missing
  [ -r /etc/munge/munge.key ] || cannot "/etc/munge/munge.key missing (munge not set up)"
  ip netns add "${NS}" 2>/dev/null || [ -e "${NSPATH}" ] || cannot "ip netns add failed (no CAP_SYS_ADMIN?)"
  nsenter --net="${NSPATH}" ip link set lo up
  nsenter --net="${NSPATH}" ip addr add 127.0.0.2/8 dev lo 2>/dev/null || true

  local host cpus mem_mb
  host="$(hostname -s)"
  cpus="$(getconf _NPROCESSORS_ONLN)"  # not nproc: it follows OMP_NUM_THREADS
  mem_mb="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
  mkdir -p "${MUNGE}" "${DIR}/state" "${DIR}/spool"
  chown munge:munge "${MUNGE}"
  chmod 0755 "${MUNGE}"
  cat >"${DIR}/slurm.conf" <<EOF
# written by tests/helpers/slurm_local.sh: one node on loopback, in network namespace ${NS}
ClusterName=wsitest
SlurmctldHost=${host}(127.0.0.2)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${MUNGE}/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=${DIR}/state
SlurmdSpoolDir=${DIR}/spool
SlurmctldPidFile=${DIR}/slurmctld.pid
SlurmdPidFile=${DIR}/slurmd.pid
SlurmctldLogFile=${DIR}/slurmctld.log
SlurmdLogFile=${DIR}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
KillWait=5
NodeName=${host} NodeAddr=127.0.0.2 CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
EOF
  : >"${DIR}/pids"
  # munged stays in the foreground (-F); setpriv execs it, so the PID recorded is munged's own.
  setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F -S "${MUNGE}/munge.socket" \
    --pid-file "${MUNGE}/munged.pid" --log-file "${MUNGE}/munged.log" \
    --seed-file "${MUNGE}/munged.seed" >"${DIR}/munged.out" 2>&1 &
  echo "$!" >>"${DIR}/pids"
  for _ in $(seq 100); do [ -S "${MUNGE}/munge.socket" ] && break; sleep 0.1; done
  [ -S "${MUNGE}/munge.socket" ] || { cat "${DIR}/munged.out" >&2 || true; stop; exit 1; }
  # nsenter execs the daemon: the PID recorded is the daemon's (-D: in the foreground).
  SLURM_CONF="${DIR}/slurm.conf" nsenter --net="${NSPATH}" /usr/sbin/slurmctld -D -i \
    -f "${DIR}/slurm.conf" >"${DIR}/slurmctld.out" 2>&1 &
  echo "$!" >>"${DIR}/pids"
  SLURM_CONF="${DIR}/slurm.conf" nsenter --net="${NSPATH}" /usr/sbin/slurmd -D \
    -f "${DIR}/slurm.conf" -N "${host}" >"${DIR}/slurmd.out" 2>&1 &
  echo "$!" >>"${DIR}/pids"
  for _ in $(seq 300); do
    if in_ns sinfo -h -o '%T' 2>/dev/null | grep -q '^idle'; then
      echo "SLURM_CONF=${DIR}/slurm.conf NETNS=${NSPATH}"
      return 0
    fi
    sleep 0.1
  done
  echo "slurm_local: the node did not become idle within 30 s; logs:" >&2
  tail -n 20 "${DIR}/slurmctld.log" "${DIR}/slurmd.log" "${DIR}/slurmctld.out" "${DIR}/slurmd.out" >&2 || true
  stop
  exit 1
}

stop() {
  # Jobs first (their processes are the daemons' children), then the daemons, newest first.
  if [ -e "${NSPATH}" ] && [ -f "${DIR}/slurm.conf" ]; then
    in_ns scancel --full --quiet --user=root 2>/dev/null || true
  fi
  if [ -f "${DIR}/pids" ]; then
    local pids
    pids="$(tac "${DIR}/pids")"
    for pid in ${pids}; do kill -TERM "${pid}" 2>/dev/null || true; done
    for pid in ${pids}; do
      for _ in $(seq 100); do kill -0 "${pid}" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "${pid}" 2>/dev/null || true
    done
    rm -f "${DIR}/pids"
  fi
  [ -e "${NSPATH}" ] && ip netns delete "${NS}" 2>/dev/null || true
  rm -rf "${MUNGE}"
}

case "${cmd}" in
  start) start ;;
  stop) stop ;;
  exec) SLURM_CONF="${DIR}/slurm.conf" exec nsenter --net="${NSPATH}" "$@" ;;  # CMD keeps this PID
  *) echo "usage: $0 start|stop|exec DIR [CMD...]" >&2; exit 64 ;;
esac
