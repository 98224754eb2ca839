#!/usr/bin/env bash
# Build the echo-node wheel: what a site installs (docs/operations.md) and the Docker images install.
#
#   scripts/build-wheel.sh [OUT_DIR]        default OUT_DIR: dist/ in the repository (git ignores it)
#
# Built from a clean copy of the working tree's files that git tracks or would track (what .gitignore
# leaves: no build/, .venv, caches or data), so no stray local file ends up in the wheel and the
# checkout gets no build/ or *.egg-info. Offline: the build runs without isolation, with the setuptools and
# wheel of $PYTHON (default .venv/bin/python, else python3); `python -m build` when installed, else
# `pip wheel`. Prints the wheel's path as its last line.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(realpath -m "${1:-$root/dist}")"
python="${PYTHON:-$root/.venv/bin/python}"
[[ -x "$python" ]] || python="$(command -v python3)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Tracked and new files as they are in the working tree (a tracked file deleted there is left out).
git -C "$root" ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' file; do [[ -e "$root/$file" ]] && printf '%s\0' "$file"; done |
    tar -C "$root" --null --files-from=- -cf - | tar -xf - -C "$work"

mkdir -p "$work/.dist"
if "$python" -c "import build" 2>/dev/null; then
    "$python" -m build --wheel --no-isolation --outdir "$work/.dist" "$work" >&2
else
    "$python" -m pip wheel --no-deps --no-build-isolation --quiet --wheel-dir "$work/.dist" "$work" >&2
fi

wheels=("$work"/.dist/echo_node-*.whl)
if [[ ${#wheels[@]} -ne 1 || ! -f "${wheels[0]}" ]]; then
    echo "build-wheel.sh: error: expected one echo_node wheel, got: ${wheels[*]}" >&2
    exit 1
fi
mkdir -p "$out"
mv -f "${wheels[0]}" "$out/"
echo "$out/$(basename "${wheels[0]}")"
