#!/usr/bin/env bash
# Set-up and entry point for a fresh machine: `./dev.sh demo` or `./dev.sh test`.
# Creates ./.venv (or $TANGO_DRANSPOSE_VENV), installs the project with what it needs, and, when
# run as root on Debian, installs the system packages it needs first.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${TANGO_DRANSPOSE_VENV:-.venv}
PY=${PYTHON:-python3}

log() { printf '[dev.sh] %s\n' "$*" >&2; }

debian_packages() {
    # Only what pip cannot bring: a Python with venv support.
    local need=()
    "$PY" -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
    if [ ${#need[@]} -gt 0 ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            log "installing Debian packages: ${need[*]}"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
        else
            log "missing system packages (${need[*]}); run as root or install them"
            exit 2
        fi
    fi
}

cpp_tango_db() {
    # The facility C++ Tango DB and its access control server, for the system tests; without
    # them they skip their cases and say why, so a failed install must not stop the test run.
    [ -x /usr/lib/tango/DataBaseds ] && [ -x /usr/lib/tango/TangoAccessControl ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        log "no C++ Tango DB (Debian packages mariadb-server tango-db tango-accesscontrol):" \
            "its tests will skip"
        return 0
    fi
    # The packages' postinst cannot reach a MariaDB without systemd and says so: harmless,
    # the tests start their own MariaDB (and TangoAccessControl).
    log "installing Debian packages: mariadb-server tango-db tango-accesscontrol" \
        "(log: $VENV/apt.log)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq mariadb-server tango-db; } >"$VENV/apt.log" 2>&1; then
        tail -n 15 "$VENV/apt.log" >&2
        log "installing the C++ Tango DB failed (log: $VENV/apt.log); its tests will skip"
    # Apart, so that without it only the access control tests skip.
    elif ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tango-accesscontrol \
            >>"$VENV/apt.log" 2>&1; then
        tail -n 15 "$VENV/apt.log" >&2
        log "installing tango-accesscontrol failed (log: $VENV/apt.log); its tests will skip"
    fi
}

setup() {
    debian_packages
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating virtual environment $VENV"
        "$PY" -m venv "$VENV"
    fi
    local stamp="$VENV/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
    if [ ! -e "$stamp" ]; then
        log "installing tango-dranspose and its test tools into $VENV (log: $VENV/pip.log)"
        if ! { "$VENV/bin/python" -m pip install --upgrade pip \
                && "$VENV/bin/python" -m pip install -e ".[test]"; } >"$VENV/pip.log" 2>&1; then
            tail -n 30 "$VENV/pip.log" >&2
            log "installation failed; the whole log is in $VENV/pip.log"
            exit 2
        fi
        rm -f "$VENV"/.installed-*
        touch "$stamp"
    fi
}

run_tests() {
    local bin="$VENV/bin"
    log "ruff"
    "$bin/ruff" check tango_dranspose tests benchmarks
    "$bin/ruff" format --check tango_dranspose tests benchmarks
    log "mypy"
    "$bin/mypy"
    log "import-linter (layers)"
    "$bin/lint-imports"
    log "pytest"
    set +e
    "$bin/python" -m pytest "$@"
    local rc=$?
    set -e
    if [ "$rc" = 5 ]; then
        log "pytest collected no tests: that is a failure"
        exit 1
    fi
    exit "$rc"
}

cmd=${1:-}
shift || true
case "$cmd" in
    demo) setup; exec "$VENV/bin/tango-dranspose" demo "$@" ;;
    test) setup; cpp_tango_db; run_tests "$@" ;;
    setup) setup; cpp_tango_db ;;
    *) echo "usage: ./dev.sh demo|test|setup [args...]" >&2; exit 2 ;;
esac
