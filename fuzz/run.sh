#!/usr/bin/env bash
# Runs netchan's fuzz targets with libFuzzer (cargo-fuzz).
#
#   fuzz/run.sh TARGET|all SECONDS   fuzz each target for SECONDS, starting
#                                    from the committed corpus
#   fuzz/run.sh regress [TARGET]     replay fuzz/regressions/ (inputs that
#                                    crashed or hung netchan once)
#   fuzz/run.sh seeds                rewrite fuzz/corpus/ from the seed writer
#   fuzz/run.sh list                 the targets
#
# Installs cargo-fuzz if missing. Uses $RUSTUP_TOOLCHAIN if set, else the
# nightly toolchain if rustup has one, else the default toolchain; with
# RUSTC_BOOTSTRAP=1 unless it is a nightly. The committed
# corpus is copied to a temporary directory, so a run adds no file to the
# repository; crashes are written to fuzz/artifacts/TARGET/ (ignored by
# git). Exits non-zero if any target crashed, leaked, hung or failed to
# build.
#
# Environment: FUZZ_JOBS=N runs N libFuzzer processes per target (default
# 1); FUZZ_ARGS adds libFuzzer flags; KEEP_CORPUS=1 keeps the grown
# corpus directories (their paths are printed).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

TARGETS=(frame_decode hello connection message_decode session_frames session_stream)

usage() {
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

[ $# -ge 1 ] || usage
cmd="$1"

if [ "$cmd" = list ]; then
    printf '%s\n' "${TARGETS[@]}"
    exit 0
fi

# --- toolchain -----------------------------------------------------------
# RUSTUP_TOOLCHAIN, if set, wins (RUSTUP_TOOLCHAIN=stable tries the path of
# a machine without nightly). Otherwise the first nightly that `rustup
# toolchain list` shows, else the default toolchain. Anything but nightly
# gets RUSTC_BOOTSTRAP=1 for cargo-fuzz's -Z flags (sanitizers, coverage).
TC=()
nightly=""
if [ -z "${RUSTUP_TOOLCHAIN:-}" ] && command -v rustup >/dev/null 2>&1; then
    nightly=$(rustup toolchain list 2>/dev/null | awk '/^nightly/ { print $1; exit }') || nightly=""
fi
if [ -n "$nightly" ]; then
    TC=(+"$nightly")
    echo "fuzz: using $nightly ($(rustc "${TC[@]}" --version))"
else
    case "${RUSTUP_TOOLCHAIN:-}" in
    nightly*) echo "fuzz: using $(rustc --version) (RUSTUP_TOOLCHAIN=$RUSTUP_TOOLCHAIN)" ;;
    *)
        export RUSTC_BOOTSTRAP=1
        echo "fuzz: no nightly toolchain chosen; using $(rustc --version) with RUSTC_BOOTSTRAP=1"
        ;;
    esac
fi

if [ "$cmd" = seeds ]; then
    rm -rf corpus
    cargo "${TC[@]}" run --quiet --example gen_corpus
    exit 0
fi

# --- cargo-fuzz ----------------------------------------------------------
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    t0=$(date +%s)
    # Built like any tool, without RUSTC_BOOTSTRAP.
    env -u RUSTC_BOOTSTRAP cargo install cargo-fuzz --locked --quiet
    echo "fuzz: cargo-fuzz installed in $(( $(date +%s) - t0 )) s"
fi

# -a: debug assertions and overflow checks, so arithmetic overflow panics.
BUILD_FLAGS=(-O -a)

# Builds every target; cargo's output goes to a log, shown if it fails.
build() {
    local t0 log
    t0=$(date +%s)
    log="$(mktemp "${TMPDIR:-/tmp}/netchan-fuzz-build.XXXXXX")"
    echo "fuzz: building the targets (log: $log)"
    if ! cargo "${TC[@]}" fuzz build "${BUILD_FLAGS[@]}" >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz: build FAILED (log: $log)"
        exit 1
    fi
    rm -f "$log"
    echo "fuzz: built in $(( $(date +%s) - t0 )) s"
}

# --- regressions ---------------------------------------------------------
if [ "$cmd" = regress ]; then
    targets=("${TARGETS[@]}")
    [ $# -ge 2 ] && targets=("$2")
    build
    status=0
    rlog="$(mktemp "${TMPDIR:-/tmp}/netchan-fuzz-regress.XXXXXX")"
    for t in "${targets[@]}"; do
        dir="regressions/$t"
        [ -d "$dir" ] || continue
        for f in "$dir"/*; do
            [ -f "$f" ] || continue
            case "$f" in *.md | *.txt) continue ;; esac
            if NETCHAN_FUZZ_STRICT=1 cargo "${TC[@]}" fuzz run "${BUILD_FLAGS[@]}" "$t" "$f" -- \
                -timeout=10 -runs=1 >"$rlog" 2>&1; then
                echo "PASS $t $(basename "$f")"
            else
                echo "FAIL $t $(basename "$f")"
                grep -E -A2 'panicked|ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)' \
                    "$rlog" | head -4 | cut -c1-200 | sed 's/^/    /' || true
                cp "$rlog" "$rlog-$t-$(basename "$f")"
                echo "    log: $rlog-$t-$(basename "$f")"
                status=1
            fi
        done
    done
    rm -f "$rlog"
    exit $status
fi

# --- fuzzing -------------------------------------------------------------
[ $# -ge 2 ] || usage
secs="$2"
case "$secs" in '' | *[!0-9]*) usage ;; esac

if [ "$cmd" = all ]; then
    targets=("${TARGETS[@]}")
else
    found=0
    for t in "${TARGETS[@]}"; do [ "$t" = "$cmd" ] && found=1; done
    [ $found = 1 ] || { echo "fuzz: unknown target $cmd (try: fuzz/run.sh list)"; exit 2; }
    targets=("$cmd")
fi

build
jobs="${FUZZ_JOBS:-1}"
status=0
summary=()
for t in "${targets[@]}"; do
    work="$(mktemp -d "${TMPDIR:-/tmp}/netchan-fuzz-$t.XXXXXX")"
    mkdir -p "$work/corpus" "artifacts/$t"
    if [ -d "corpus/$t" ]; then cp -r "corpus/$t/." "$work/corpus/"; fi
    log="$work/log"
    echo "fuzz: $t for ${secs} s (log: $log)"
    extra=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -max_total_time="$secs" -artifact_prefix="$here/artifacts/$t/")
    if [ "$jobs" -gt 1 ]; then extra+=(-fork="$jobs" -ignore_crashes=0); fi
    # shellcheck disable=SC2086
    if cargo "${TC[@]}" fuzz run "${BUILD_FLAGS[@]}" "$t" "$work/corpus" -- \
        "${extra[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
        status=1
    fi
    execs=$(grep -E '^stat::number_of_executed_units' "$log" | tail -1 | awk '{print $2}' || true)
    rate=$(grep -E '^stat::average_exec_per_sec' "$log" | tail -1 | awk '{print $2}' || true)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}' || true)
    if [ -z "$execs" ]; then
        # No final stats after a crash: the last status line has the count.
        execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
        rate=$(grep -oE 'exec/s: [0-9]+' "$log" | tail -1 | awk '{print $2}' || true)
    fi
    units=$(find "$work/corpus" -type f | wc -l)
    line=$(printf '%-16s %-5s execs=%-10s exec/s=%-7s cov=%-6s corpus=%s' \
        "$t" "$result" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$units")
    echo "fuzz: $line"
    summary+=("$line")
    if [ "$result" != ok ]; then
        grep -E -A2 'panicked at|ERROR: (AddressSanitizer|libFuzzer|LeakSanitizer)' "$log" \
            | head -6 | cut -c1-200 | sed 's/^/    /' || true
        grep -E 'SUMMARY|Test unit written to' "$log" | head -3 | sed 's/^/    /' || true
        echo "    full log: $log"
    elif [ "${KEEP_CORPUS:-0}" = 1 ]; then
        echo "    corpus kept: $work/corpus"
    else
        rm -rf "$work"
    fi
done

echo
echo "fuzz summary (${secs} s per target):"
printf '  %s\n' "${summary[@]}"
exit $status
