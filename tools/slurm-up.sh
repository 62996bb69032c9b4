#!/usr/bin/env bash
# Adapted from the recipe in ../shared/slurm/ (a tested single-node cluster for the project's own CI test).
# Bring up a single-node SLURM cluster (munge + slurmctld + slurmd) on localhost.
# Debian 12, run as root, no systemd needed.
#   WITH_DBD=1 ./slurm-up.sh   -> also MariaDB + slurmdbd, so `sacct` works
set -euo pipefail
WITH_DBD="${WITH_DBD:-0}"
export DEBIAN_FRONTEND=noninteractive

# wait_for <seconds> <command...>: retry every 0.5 s until the command succeeds
wait_for() { local n=$(( $1 * 2 )); shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "timeout waiting for: $*" >&2; return 1; }
# running <pidfile>: true if the daemon recorded there is alive (makes re-runs safe)
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# ---- 1. packages (policy-rc.d / no systemd: postinst does not start anything)
PKGS="munge slurmctld slurmd slurm-client"
[ "$WITH_DBD" = 1 ] && PKGS="$PKGS slurmdbd mariadb-server"
if ! apt-cache policy slurmctld 2>/dev/null | grep -q "Candidate: [0-9]"; then apt-get update -qq; fi
apt-get install -y -qq --no-install-recommends $PKGS >/dev/null

# ---- 2. munge (the Debian postinst creates /etc/munge/munge.key; make one if it is missing)
[ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key; \
  chown munge:munge /etc/munge/munge.key; chmod 0600 /etc/munge/munge.key; }
install -d -o munge -g munge -m 0755 /run/munge
running /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged   # forks; pid in /run/munge/munged.pid
wait_for 10 sh -c 'munge -n | unmunge'

# ---- 3. slurm.conf
HOST=$(hostname -s)
NCPU=$(nproc)
REALMEM=$(( $(free -m | awk '/^Mem:/{print $2}') * 90 / 100 ))
if [ "$WITH_DBD" = 1 ]; then
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819"
else
  ACCT="AccountingStorageType=accounting_storage/none"
fi
install -d -m 0755 /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=localcluster
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
${ACCT}
JobCompType=jobcomp/none
AccountingStoreFlags=job_comment
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=300
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmctldPort=6817
SlurmdPort=6818
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${NCPU} RealMemory=${REALMEM} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
EOF

# ---- 4. optional: MariaDB + slurmdbd (needed only for sacct)
if [ "$WITH_DBD" = 1 ]; then
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  if ! mariadb-admin ping >/dev/null 2>&1; then
    nohup /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 \
      --pid-file=/run/mysqld/mysqld.pid >/var/log/slurm/mariadbd.out 2>&1 &
    wait_for 30 mariadb-admin ping
  fi
  mariadb -u root -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbpass';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat > /etc/slurm/slurmdbd.conf <<'EOF'
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageUser=slurm
StoragePass=slurmdbpass
StorageLoc=slurm_acct_db
EOF
  chmod 0600 /etc/slurm/slurmdbd.conf         # slurmdbd refuses a world-readable file
  running /run/slurmdbd.pid || /usr/sbin/slurmdbd   # forks; pid in /run/slurmdbd.pid
  wait_for 30 bash -c '</dev/tcp/127.0.0.1/6819'
fi

# ---- 5. slurmctld + slurmd (both fork into the background)
running /run/slurmctld.pid || /usr/sbin/slurmctld
wait_for 30 scontrol ping
running /run/slurmd.pid || /usr/sbin/slurmd
wait_for 60 sh -c "sinfo -h -n '$HOST' -o %T | grep -qx idle"
[ "$WITH_DBD" = 1 ] && wait_for 30 sh -c 'sacctmgr -n -P list cluster format=cluster | grep -qx localcluster'
sinfo
echo "SLURM is up (WITH_DBD=$WITH_DBD)"
