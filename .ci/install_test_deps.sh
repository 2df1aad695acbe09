#!/usr/bin/env bash
# Installs the Debian packages the test suite uses, where missing: real recordings (alsa-utils,
# sound-theme-freedesktop, espeak-ng), Chromium for the report screenshot test, and SLURM with its accounting
# database for the test that runs profiles/slurm on a one-node cluster (.ci/local_slurm.sh).
set -euo pipefail
need=()
[ -d /usr/share/sounds/alsa ] || need+=(alsa-utils)
[ -d /usr/share/sounds/freedesktop ] || need+=(sound-theme-freedesktop)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v chromium >/dev/null || need+=(chromium)
command -v slurmctld >/dev/null || need+=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "test set-up: missing ${need[*]}; install them (Debian: apt-get install ${need[*]})" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
  apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
