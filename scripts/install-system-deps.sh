#!/usr/bin/env bash
# System packages the integration tests need: a real OpenSSH server (sshd, sftp-server), iproute2
# for network namespaces, procps for ps/pkill, and a one-node Slurm cluster for the SkyPilot test
# (slurm-wlm, munge; SkyPilot syncs with rsync). Idempotent: installs only what is missing.
set -euo pipefail
need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
[ -x /usr/lib/openssh/sftp-server ] || need+=(openssh-sftp-server)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v ip >/dev/null || need+=(iproute2)
command -v ps >/dev/null || need+=(procps)
command -v rsync >/dev/null || need+=(rsync)
[ -x /usr/sbin/munged ] || need+=(munge)
{ [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] && command -v sbatch >/dev/null; } || need+=(slurm-wlm)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing system packages: ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
mkdir -p /run/sshd 2>/dev/null || true
# A pyenv rehash lock left by a killed shell makes every later login wait a minute.
rm -f "${PYENV_ROOT:-$HOME/.pyenv}/shims/.pyenv-shim" 2>/dev/null || true
