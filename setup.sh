#!/usr/bin/env bash
# Set up everything runs need on a Debian machine, idempotently: the Docker engine (started if not
# running), debootstrap, this package, and the base image (built from Debian's packages when no registry
# can be reached). Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
BASE_IMAGE="${RUNNER_BASE_IMAGE:-runner-base:bookworm}"

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v git >/dev/null || need+=(git)
# The tests drive the MLflow UI in Debian's headless Chromium.
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "[setup] installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "[setup] starting dockerd"
  if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
    $SUDO systemctl start docker
  else
    $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "[setup] dockerd did not start: see /var/log/dockerd.log" >&2; exit 1; }
fi

echo "[setup] installing runner"
python3 -m pip install -q -e '.[dev]'

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  if ! timeout 60 docker pull -q "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "[setup] $BASE_IMAGE cannot be pulled: building it from Debian's packages"
    $SUDO "$(command -v python3)" -m runner image base --tag "$BASE_IMAGE"
  fi
fi
echo "[setup] ready"
