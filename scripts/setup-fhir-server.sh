#!/usr/bin/env bash
# Installs the FHIR R4 server the FHIR exporter tests deliver to: Medplum's FHIR router
# (@medplum/fhir-router, core, definitions; versions pinned in scripts/fhir-server/package-lock.json)
# from npm into .cache/fhir-server/node_modules. scripts/fhir-server/server.cjs serves it over HTTP.
#
# Idempotent: does nothing when the installed lock file matches the committed one. Needs Node.js
# >= 20.19 and npm. Run from anywhere; ECHO_FHIR_SERVER_DIR overrides the install folder.
set -euo pipefail
cd "$(dirname "$0")/.."

source_dir=scripts/fhir-server
target=${ECHO_FHIR_SERVER_DIR:-.cache/fhir-server}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "setup-fhir-server: node and npm are needed (Node.js >= 20.19)" >&2
    exit 1
fi
if ! node -e '
    const [major, minor] = process.versions.node.split(".").map(Number);
    process.exit(major > 20 || (major === 20 && minor >= 19) ? 0 : 1);
'; then
    echo "setup-fhir-server: Node.js >= 20.19 is needed, found $(node --version)" >&2
    exit 1
fi

# The stamp is the lock file of the last install that finished; a broken install has none.
stamp=$target/installed-lock.json
if cmp -s "$source_dir/package-lock.json" "$stamp"; then
    exit 0
fi
rm -f "$stamp"

mkdir -p "$target"
cp "$source_dir/package.json" "$source_dir/package-lock.json" "$target/"
# npm ci installs exactly the lock file's versions (checked against its integrity hashes).
npm ci --prefix "$target" --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error
cp "$source_dir/package-lock.json" "$stamp"
echo "setup-fhir-server: installed into $target"
