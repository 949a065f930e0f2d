#!/usr/bin/env bash
# The README's test command: every test of the workspace, then the NATS
# tests (feature `nats`) against a real nats-server, which this script
# installs where it is missing (scripts/nats-server.sh). The NATS tests
# start their own servers on free loopback ports and stop them after.
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_SERVER="$(bash scripts/nats-server.sh)"
export NATS_SERVER
echo "using nats-server: $NATS_SERVER ($("$NATS_SERVER" --version 2>/dev/null || echo 'version unknown'))"

cargo test --workspace
cargo test -p netchan --features nats --lib nats::
cargo test -p netchan --features nats --test nats
