#!/usr/bin/env bash
# Create .venv with Python 3.12 and install lerobot-pirl with the given extras.
# Usage: scripts/bootstrap.sh [extras]   (e.g. "test,metaworld")
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
venv=".venv"

find_python() {
    local cand
    # 1) a python3.12 on PATH that really runs (pyenv shims may exist but be inactive)
    for cand in python3.12 python3; do
        if command -v "$cand" >/dev/null 2>&1 \
            && "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
            command -v "$cand"; return 0
        fi
    done
    # 2) pyenv's versions folder, then common system locations
    local roots=()
    if command -v pyenv >/dev/null 2>&1; then roots+=("$(pyenv root)/versions"); fi
    roots+=("${PYENV_ROOT:-$HOME/.pyenv}/versions")
    for root in "${roots[@]}"; do
        for cand in "$root"/3.12*/bin/python3.12; do
            if [ -x "$cand" ] && "$cand" -c 'import venv' >/dev/null 2>&1; then echo "$cand"; return 0; fi
        done
    done
    for cand in /usr/local/bin/python3.12 /usr/bin/python3.12 /opt/homebrew/bin/python3.12; do
        if [ -x "$cand" ]; then echo "$cand"; return 0; fi
    done
    return 1
}

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    if ! py="$(find_python)"; then
        echo "error: no Python 3.12 interpreter found (looked on PATH and in pyenv's versions folder);" \
             "install Python 3.12 (e.g. 'pyenv install 3.12' or 'apt-get install python3.12 python3.12-venv')" >&2
        exit 1
    fi
    echo ">> creating $venv with $py"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
fi

# Reinstall only when pyproject.toml or the requested extras changed.
stamp="$venv/.pirl-stamp"
want="$(cat pyproject.toml | sha1sum | cut -d' ' -f1) [$extras]"
if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
    spec="."
    [ -n "$extras" ] && spec=".[$extras]"
    echo ">> installing lerobot-pirl$( [ -n "$extras" ] && echo "[$extras]") into $venv (first run downloads torch: a few minutes)"
    "$venv/bin/python" -m pip install --quiet -e "$spec"
    echo "$want" >> "$stamp"
fi
