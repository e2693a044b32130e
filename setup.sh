#!/usr/bin/env bash
# Set up everything runs need on a Debian machine, idempotently: the system packages (Docker engine,
# debootstrap, git, Chromium for the UI test), the engine started if it is not running, this package, the
# base image (rebuilt when its recipe changed), and a first run in a container to prove the chain works.
# One line per step with its time; the tools' own output goes to a log file, whose last lines are shown
# with the step's name when a step fails.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
BASE_IMAGE="${RUNNER_BASE_IMAGE:-runner-base:bookworm}"
mkdir -p .runner
LOG="$PWD/.runner/setup.log"
: >"$LOG"
echo "[setup] full output in $LOG"

step() {  # step NAME FUNCTION: FUNCTION's output goes to the log, its note (fd 3) onto the step's line
  local name=$1 fn=$2 start status note
  start=$(date +%s%N)
  echo "=== $name" >>"$LOG"
  set +e
  (set -e; "$fn") >>"$LOG" 2>&1 3>"$LOG.note"
  status=$?
  set -e
  note=$(tail -n 1 "$LOG.note"); rm -f "$LOG.note"
  local took=$((($(date +%s%N) - start) / 1000000))
  if [ "$status" -eq 0 ]; then
    printf '[setup] %-11s %5d.%ds  %s\n' "$name" $((took / 1000)) $((took % 1000 / 100)) "$note"
  else
    printf '[setup] %-11s FAILED (exit %d) after %d.%ds%s; the last lines of %s:\n' "$name" "$status" \
      $((took / 1000)) $((took % 1000 / 100)) "${note:+: $note}" "$LOG" >&2
    tail -n 25 "$LOG" | sed 's/^/    /' >&2
    exit 1
  fi
}

packages() {
  local need=()
  command -v dockerd >/dev/null || need+=(docker.io)
  command -v debootstrap >/dev/null || need+=(debootstrap)
  command -v git >/dev/null || need+=(git)
  command -v chromium >/dev/null || need+=(chromium)  # the tests drive the MLflow UI in headless Chromium
  command -v chromedriver >/dev/null || need+=(chromium-driver)
  if [ ${#need[@]} -eq 0 ]; then
    echo "already installed" >&3
    return
  fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
  echo "installed ${need[*]}" >&3
}

engine() {
  if docker info >/dev/null 2>&1; then
    echo "Docker $(docker version -f '{{.Server.Version}}') already running" >&3
    return
  fi
  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    $SUDO systemctl start docker
  else
    $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start: see /var/log/dockerd.log" >&3; return 1; }
  echo "Docker $(docker version -f '{{.Server.Version}}') started" >&3
}

package() {
  python3 -m pip install -e '.[dev]'
  echo "runner $(python3 -c 'from importlib.metadata import version; print(version("runner"))') installed (editable)" >&3
}

base_image() {
  local before after
  before=$(docker image inspect -f '{{.Id}} {{index .Config.Labels "runner.base.recipe"}}' "$BASE_IMAGE" 2>/dev/null || true)
  if [ "$BASE_IMAGE" != "runner-base:bookworm" ] && [ -n "$before" ] && [ "${before#* }" = "<no value>" ]; then
    echo "$BASE_IMAGE is here and not made by runner image base: kept as it is" >&3
    return
  fi
  # Built from Debian's packages (no registry needed); left alone when made by the current recipe.
  $SUDO "$(command -v python3)" -m runner image base --tag "$BASE_IMAGE"
  after=$(docker image inspect -f '{{.Id}} {{index .Config.Labels "runner.base.recipe"}}' "$BASE_IMAGE")
  if [ "$before" = "$after" ]; then
    echo "$BASE_IMAGE up to date (recipe ${after#* })" >&3
  else
    echo "$BASE_IMAGE built: ${after%% *} (recipe ${after#* })" >&3
  fi
}

first_run() {  # a real run in a container, in a throw-away project: engine, image, build, tracking
  local tmp status
  tmp=$(mktemp -d -t runner-setup-XXXXXX)
  cp .gitignore "$tmp/"  # the configs come with the installed package
  git -C "$tmp" init -q
  git -C "$tmp" add -A
  git -C "$tmp" -c user.name=setup -c user.email=setup@localhost commit -qm "first run"
  status=0
  (cd "$tmp" && python3 -m runner backend=docker 'env.requirements=[]' "env.image=$BASE_IMAGE" \
    'command="python -c pass"') || status=$?
  rm -rf "$tmp"
  [ "$status" -eq 0 ] || { echo "the run failed (exit $status)" >&3; return 1; }
  echo "a run in a container ended FINISHED" >&3
}

step packages packages
step engine engine
step package package
step "base image" base_image
step "first run" first_run
echo "[setup] ready"
