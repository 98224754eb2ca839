#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine and starts the services it talks to.
# Idempotent: a second run installs nothing and starts nothing that is already up.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v storescu >/dev/null || need_apt+=(dcmtk)
command -v dciodvfy >/dev/null || need_apt+=(dicom3tools)
[ -x /usr/sbin/Orthanc ] || need_apt+=(orthanc)  # the PACS that shows both SRs; the ingest benchmark's peer
command -v chromium >/dev/null || need_apt+=(chromium)  # the status page's screenshot test
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  echo "setup: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "setup: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
echo "setup: the FHIR server the FHIR tests deliver to (Medplum's FHIR router, from npm)"
bash scripts/setup-fhir-server.sh
echo "setup: installing the project with its dev extra (torch CPU 2.13.0 is pinned in the train extra)"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
