#!/usr/bin/env bash
# `make fuzz`: builds the fuzz targets (fuzz/) with libFuzzer and runs each for FUZZ_SECONDS.
#
# The fuzzer is libFuzzer from the `libfuzzer-sys` crate, driven on stable Rust: coverage comes
# from LLVM's SanitizerCoverage pass (`-Cpasses=sancov-module`, stable flags), libFuzzer itself
# is compiled from C++ by the crate's build script. No nightly, no cargo-fuzz, no sanitizer:
# a panic is the crash (the profile aborts on panic), and `-rss_limit_mb`/`-timeout` catch
# memory and time blow-ups.
#
# New inputs that add coverage go to target/fuzz/corpus/<target> (not checked in); a crash is
# minimised into fuzz/corpus/<target>/crash-<sha1> (commit it with the fix: the replay in
# `cargo test` then guards it) and the run fails.
#
#   FUZZ_SECONDS=60 FUZZ_TARGETS="sse_decoder upstream_url" scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
HOST=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-target/fuzz}
BIN=$CARGO_TARGET_DIR/$HOST/fuzz/tollgate-fuzz
TARGETS=${FUZZ_TARGETS:-$(ls fuzz/corpus)}

# --target keeps these flags off build scripts and proc macros (they would not link).
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
    cargo build --profile fuzz --target "$HOST" -p tollgate-fuzz --features libfuzzer --bin tollgate-fuzz

failed=()
for t in $TARGETS; do
    work=$CARGO_TARGET_DIR/corpus/$t
    artifacts=$CARGO_TARGET_DIR/artifacts/$t
    mkdir -p "$work" "$artifacts"
    rm -f "$artifacts"/crash-* "$artifacts"/oom-* "$artifacts"/timeout-*
    echo "==> fuzzing $t for ${FUZZ_SECONDS}s"
    if TOLLGATE_FUZZ_TARGET=$t "$BIN" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts/" "$work" "fuzz/corpus/$t" \
        2>"$artifacts/log"; then
        grep -E "^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)" "$artifacts/log" || true
        continue
    fi
    tail -n 40 "$artifacts/log"
    for crash in "$artifacts"/crash-* "$artifacts"/oom-* "$artifacts"/timeout-*; do
        [ -e "$crash" ] || continue
        TOLLGATE_FUZZ_TARGET=$t "$BIN" -minimize_crash=1 -runs=20000 -exact_artifact_path="$crash.min" "$crash" \
            >/dev/null 2>&1 || true
        [ -s "$crash.min" ] || cp "$crash" "$crash.min"
        dest=fuzz/corpus/$t/crash-$(sha1sum "$crash.min" | cut -c1-16)
        cp "$crash.min" "$dest"
        echo "==> $t: crash minimised into $dest"
    done
    failed+=("$t")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "==> crashes in: ${failed[*]}"
    exit 1
fi
echo "==> fuzzed: $TARGETS"
