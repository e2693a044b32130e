#!/usr/bin/env bash
# A one-node SLURM cluster on 127.0.0.1, with job accounting (sacct), and a team's MLflow tracking server on
# PostgreSQL, for trying and testing the runner's cluster use on one machine. Debian's own packages: slurmctld,
# slurmd, slurmdbd, munge, MariaDB for the accounting database (slurmdbd stores into MySQL/MariaDB only),
# PostgreSQL for MLflow's, and Podman as the nodes' second container engine. No cgroups needed: process tracking by /proc.
#
#   scripts/cluster.sh up      # install what is missing, start munge, the databases, slurmdbd, slurmctld, slurmd
#                              # and `mlflow server --app-name basic-auth` (PostgreSQL store, artifacts in the
#                              # cluster folder), with an account for each of $RUNNER_CLUSTER_USERS (alice bob)
#   scripts/cluster.sh down    # stop them (the state stays in the cluster folder)
#   source "$RUNNER_CLUSTER_DIR/env"   # SLURM_CONF for sbatch, squeue, sacct, scancel; MLFLOW_TRACKING_URI
#   source "$RUNNER_CLUSTER_DIR/users/alice.env"   # alice's MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD
#
# The server's accounts: MLflow's own basic-auth app, configured by etc/basic_auth.ini (owner-only: its admin
# password), every user reading all runs (default_permission = READ) and changing only the experiments they made.
# SLURM's accounting keeps each job's script and environment (sacct --batch-script, --env-vars).
#
# The cluster folder is $RUNNER_CLUSTER_DIR (default /tmp/runner-cluster); on a real cluster the artifact folder
# is on the shared filesystem. Runs as root (the daemons' user).
set -euo pipefail

DIR=${RUNNER_CLUSTER_DIR:-/tmp/runner-cluster}
DB_PORT=${RUNNER_CLUSTER_DB_PORT:-3307}
PG_PORT=${RUNNER_CLUSTER_PG_PORT:-5433}
MLFLOW_PORT=${RUNNER_CLUSTER_MLFLOW_PORT:-5055}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
PYTHON=${PYTHON:-python3}
NAME=runner
USERS=${RUNNER_CLUSTER_USERS:-alice bob}  # the tracking server's accounts
HOST=$(hostname -s)
CONF=$DIR/etc/slurm.conf
export SLURM_CONF=$CONF

say() { echo "[cluster] $*"; }
fail() { echo "[cluster] $*" >&2; exit 1; }

packages() {
  local missing=()
  for pair in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client slurmdbd:slurmdbd munged:munge \
      mariadbd:mariadb-server pg_lsclusters:postgresql podman:podman /usr/libexec/podman/catatonit:catatonit; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -q >"$DIR/apt.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$DIR/apt.log" 2>&1 \
      || { tail -5 "$DIR/apt.log" >&2; fail "could not install ${missing[*]} (see $DIR/apt.log)"; }
  fi
}

munge_up() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return; fi
  install -d -o munge -g munge -m 0755 /run/munge
  chown -R munge:munge /var/log/munge /var/lib/munge /etc/munge
  [ -s /etc/munge/munge.key ] || su -s /bin/sh munge -c "mungekey --create" >/dev/null
  su -s /bin/sh munge -c munged
  munge -n | unmunge >/dev/null || fail "munged does not answer"
}

database_up() {
  install -d -o mysql -g mysql "$DIR/mysql" "$DIR/mysqld"
  if [ ! -d "$DIR/mysql/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$DIR/mysql" >"$DIR/log/mariadb-init.log" 2>&1 \
      || fail "could not create the accounting database (see $DIR/log/mariadb-init.log)"
  fi
  if ! mariadb --socket="$DIR/mysqld/mysqld.sock" -e "select 1" >/dev/null 2>&1; then
    mariadbd --user=mysql --datadir="$DIR/mysql" --socket="$DIR/mysqld/mysqld.sock" --bind-address=127.0.0.1 \
      --port="$DB_PORT" --pid-file="$DIR/mysqld/mysqld.pid" >>"$DIR/log/mariadb.log" 2>&1 &
    for _ in $(seq 50); do
      mariadb --socket="$DIR/mysqld/mysqld.sock" -e "select 1" >/dev/null 2>&1 && break
      sleep 0.2
    done
  fi
  mariadb --socket="$DIR/mysqld/mysqld.sock" -e "
    create database if not exists slurm_acct_db;
    create user if not exists 'slurm'@'127.0.0.1' identified by 'slurm';
    grant all on slurm_acct_db.* to 'slurm'@'127.0.0.1';" || fail "the accounting database does not answer"
}

tracking_up() {  # MLflow's own server, its store in PostgreSQL
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  install -d -o postgres -g postgres -m 0700 "$DIR/pg"
  install -d -o postgres -g postgres "$DIR/pgrun"
  [ -f "$DIR/pg/PG_VERSION" ] || su -s /bin/sh postgres -c "$PG_BIN/initdb -D $DIR/pg -A trust -U postgres" \
    >"$DIR/log/pg-init.log" 2>&1 || fail "could not create the tracking database (see $DIR/log/pg-init.log)"
  if ! "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -q; then
    su -s /bin/sh postgres -c "$PG_BIN/pg_ctl -D $DIR/pg -l $DIR/pgrun/postgres.log -w \
      -o '-p $PG_PORT -k $DIR/pgrun -c listen_addresses=127.0.0.1' start" >/dev/null \
      || fail "PostgreSQL did not start (see $DIR/pgrun/postgres.log)"
  fi
  "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "select 1 from pg_database where datname='mlflow'" \
    | grep -q 1 || "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres mlflow
  "$PYTHON" -c "import psycopg2" 2>/dev/null || "$PYTHON" -m pip install -q psycopg2-binary >>"$DIR/log/pip.log" 2>&1 \
    || fail "could not install psycopg2-binary (see $DIR/log/pip.log)"
  "$PYTHON" -c "import flask_wtf" 2>/dev/null || "$PYTHON" -m pip install -q Flask-WTF >>"$DIR/log/pip.log" 2>&1 \
    || fail "could not install Flask-WTF, which MLflow's basic-auth app needs (see $DIR/log/pip.log)"
  "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc "select 1 from pg_database where datname='mlflow_auth'" \
    | grep -q 1 || "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres mlflow_auth
  mkdir -p "$DIR/artifacts"
  auth_config
  # A server started before it had accounts (it answers without them) is restarted with them.
  if alive "$DIR/mlflow.pid" && [ "$(curl -s -o /dev/null -w '%{http_code}' \
      "http://127.0.0.1:$MLFLOW_PORT/api/2.0/mlflow/experiments/search?max_results=1")" = 200 ]; then
    kill "$(cat "$DIR/mlflow.pid")"
    for _ in $(seq 100); do alive "$DIR/mlflow.pid" || break; sleep 0.2; done
  fi
  if ! alive "$DIR/mlflow.pid"; then
    # The auth app's CSRF key, kept across restarts (the UI's sessions stay valid).
    [ -s "$DIR/etc/flask.key" ] || (umask 077; secret >"$DIR/etc/flask.key")
    MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$DIR/etc/flask.key") MLFLOW_AUTH_CONFIG_PATH="$DIR/etc/basic_auth.ini" \
      MLFLOW_SERVER_ALLOWED_HOSTS="*" nohup "$PYTHON" -m mlflow \
      server --app-name basic-auth --host 127.0.0.1 --port "$MLFLOW_PORT" \
      --backend-store-uri "postgresql+psycopg2://postgres@127.0.0.1:$PG_PORT/mlflow" \
      --artifacts-destination "$DIR/artifacts" --workers 1 >>"$DIR/log/mlflow.log" 2>&1 &
    echo $! >"$DIR/mlflow.pid"
  fi
  for _ in $(seq 450); do  # its first start makes its tables: a minute on a busy machine
    curl -fs "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null && { accounts; return; }
    alive "$DIR/mlflow.pid" || break
    sleep 0.2
  done
  tail -5 "$DIR/log/mlflow.log" >&2
  fail "the MLflow server does not answer on 127.0.0.1:$MLFLOW_PORT"
}

auth_config() {  # MLflow's basic-auth app: its users in PostgreSQL; every user may read all runs, change only their own
  local ini=$DIR/etc/basic_auth.ini admin
  admin=$(sed -n 's/^admin_password = //p' "$ini" 2>/dev/null || true)
  # Each request's password check is PBKDF2, most of a second on a busy machine: a good one is kept for a minute
  # (a changed password counts at once: one worker).
  (umask 077; cat >"$ini.new" <<EOF
[mlflow]
default_permission = READ
database_uri = postgresql+psycopg2://postgres@127.0.0.1:$PG_PORT/mlflow_auth
admin_username = admin
admin_password = ${admin:-$(secret)}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
EOF
  )
  if [ -f "$ini" ] && ! cmp -s "$ini" "$ini.new" && alive "$DIR/mlflow.pid"; then  # a server on the old one goes
    kill "$(cat "$DIR/mlflow.pid")"
    for _ in $(seq 100); do alive "$DIR/mlflow.pid" || break; sleep 0.2; done
  fi
  mv "$ini.new" "$ini"
}

secret() { "$PYTHON" -c "import secrets; print(secrets.token_urlsafe(18))"; }

accounts() {  # each of $USERS an account, its credentials in $DIR/users/NAME.env (owner-only) to source; a
  # removed file gives its user a new password
  local name file
  install -d -m 0700 "$DIR/users"
  for name in $USERS; do
    file=$DIR/users/$name.env
    [ -s "$file" ] || (umask 077; printf 'export MLFLOW_TRACKING_USERNAME=%s\nexport MLFLOW_TRACKING_PASSWORD=%s\n' \
      "$name" "$(secret)" >"$file")
    case "$(as_admin POST users/create "$name" "$file")" in
      200) ;;
      400) [ "$(as_admin PATCH users/update-password "$name" "$file")" = 200 ] \
        || fail "MLflow did not set the password of $name (see $DIR/log/mlflow.log)" ;;  # there already
      *) fail "MLflow did not create the user $name (see $DIR/log/mlflow.log)" ;;
    esac
  done
}

as_admin() {  # as_admin METHOD PATH USER FILE: the HTTP status of the admin's request for USER and FILE's password,
  # the passwords through curl's standard input, never on a command line
  local admin
  admin=$(sed -n 's/^admin_password = //p' "$DIR/etc/basic_auth.ini")
  printf 'user = "admin:%s"\ndata = "{\\"username\\": \\"%s\\", \\"password\\": \\"%s\\"}"\n' "$admin" "$3" \
    "$(sed -n 's/^export MLFLOW_TRACKING_PASSWORD=//p' "$4")" | curl -s -o /dev/null -w '%{http_code}' -K - -X "$1" \
    -H 'Content-Type: application/json' "http://127.0.0.1:$MLFLOW_PORT/api/2.0/mlflow/$2"
}

configure() {
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  cat >"$CONF.new" <<EOF
# Written by scripts/cluster.sh: one node, this machine, on 127.0.0.1.
ClusterName=$NAME
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=2048
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStorageEnforce=associations,limits,qos
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ReturnToService=2
SlurmdTimeout=30
MinJobAge=300
AccountingStoreFlags=job_script,job_env
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  if [ -f "$CONF" ] && ! cmp -s "$CONF" "$CONF.new"; then  # a changed config: daemons started on the old one go
    for pid in "$DIR/slurmctld.pid" "$DIR/slurmd.pid"; do
      alive "$pid" || continue
      kill "$(cat "$pid")"
      for _ in $(seq 150); do alive "$pid" || break; sleep 0.2; done
    done
  fi
  mv "$CONF.new" "$CONF"
  cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=$HOST
DbdAddr=127.0.0.1
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurm
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/slurmdbd.pid
EOF
  chmod 600 "$DIR/etc/slurmdbd.conf"
  printf 'export SLURM_CONF=%s\nexport MLFLOW_TRACKING_URI=http://127.0.0.1:%s\n' "$CONF" "$MLFLOW_PORT" >"$DIR/env"
}

podman_setup() {
  # The nodes' second engine (backend.engine=podman). Root's Podman here runs containers with runc and plain
  # cgroupfs (this machine mounts cgroup v1 and v2 side by side, which crun refuses), and with file and process
  # limits it may set (it may not raise them; its own process limit, measured, it may not set either). Written
  # only where none is configured.
  local conf=/etc/containers/containers.conf
  [ -e "$conf" ] && return
  mkdir -p /etc/containers
  cat >"$conf" <<EOF
# Written by the runner's scripts/cluster.sh
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
  mkdir -p "$DIR"/{etc,state,spool,log}
  packages
  munge_up
  podman_setup
  database_up
  configure
  alive "$DIR/slurmdbd.pid" || slurmdbd
  for _ in $(seq 50); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
  sacctmgr -n -P list cluster format=cluster | grep -qx "$NAME" || sacctmgr -i add cluster "$NAME" >/dev/null
  # Accounts are enforced, as on a real cluster: jobs run under an account the submitting user belongs to.
  sacctmgr -n -P list account format=account | grep -qx research || sacctmgr -i add account research >/dev/null
  for user in $(id -un) ${SUDO_USER:-}; do
    sacctmgr -n -P list assoc where user="$user" account=research format=account | grep -qx research \
      || sacctmgr -i add user "$user" account=research >/dev/null
  done
  alive "$DIR/slurmctld.pid" || slurmctld
  alive "$DIR/slurmd.pid" || slurmd
  for _ in $(seq 100); do
    [ "$(sinfo -h -o %t 2>/dev/null)" = "idle" ] || [ "$(sinfo -h -o %t 2>/dev/null)" = "mix" ] && break
    sleep 0.2
  done
  state=$(sinfo -h -o %t 2>/dev/null || true)
  case "$state" in
    idle|mix|alloc) ;;
    *) tail -5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2; fail "the node is '$state', not idle" ;;
  esac
  tracking_up
  say "up: partition debug, node $HOST ($state); MLflow on http://127.0.0.1:$MLFLOW_PORT; source $DIR/env"
}

down() {
  scontrol shutdown >/dev/null 2>&1 || true
  for pid in "$DIR/slurmdbd.pid" "$DIR/mysqld/mysqld.pid" "$DIR/mlflow.pid"; do
    alive "$pid" && kill "$(cat "$pid")"
  done
  [ -f "$DIR/pg/postmaster.pid" ] && su -s /bin/sh postgres -c "$PG_BIN/pg_ctl -D $DIR/pg -m fast stop" >/dev/null || true
  say "down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: scripts/cluster.sh up|down" >&2; exit 2 ;;
esac
