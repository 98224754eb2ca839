#!/usr/bin/env bash
# Install Orthanc (Debian package `orthanc`), the peer benchmarks/ingest.py measures the node against.
# Idempotent: does nothing when /usr/sbin/Orthanc is there. The package's own service is not needed
# (the benchmark starts Orthanc with its own configuration in a temp folder) and is stopped if it runs.
set -euo pipefail

if [[ -x /usr/sbin/Orthanc ]]; then
    echo "Orthanc is installed: $(/usr/sbin/Orthanc --version | head -n 1)"
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "run as root (apt-get install orthanc)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends orthanc dcmtk
if command -v systemctl >/dev/null && systemctl is-active --quiet orthanc 2>/dev/null; then
    systemctl stop orthanc  # its default DICOM port 4242 is not what the benchmark uses; free the CPU
    systemctl disable orthanc
fi
echo "Orthanc installed: $(/usr/sbin/Orthanc --version | head -n 1)"
