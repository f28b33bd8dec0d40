# Sourced by scripts/run and scripts/test: make .venv with Python 3.13 and
# the pinned requirements (again when either requirements file changes),
# then use it.
find_python() {
    for candidate in "${PYTHON:-}" python3.13 python3 python; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "Python 3.13 is needed: install it (pyenv reads .python-version) or set PYTHON" >&2
    return 1
}

if [ ! -x .venv/bin/python ]; then
    python=$(find_python)
    "$python" -m venv .venv
fi
if ! cat requirements.txt requirements-dev.txt | cmp -s - .venv/.requirements-installed; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
    cat requirements.txt requirements-dev.txt > .venv/.requirements-installed
fi
export PATH="$PWD/.venv/bin:$PATH"
export VIRTUAL_ENV="$PWD/.venv"
