#!/usr/bin/env bash
# Throughput benchmark (figures in docs/performance.md): starts a throwaway MariaDB,
# builds release binaries and runs target/release/logarithm-bench (all sections, or
# those named: scripts/bench.sh live read).
#
# Old against new, in the same run (the ingest section):
#   LOGARITHM_BENCH_BASELINE_REV=cf41f92 scripts/bench.sh ingest
# builds logarithmd at that revision (a temporary git worktree, release, its own target
# dir: $LOGARITHM_BENCH_BASELINE_TARGET, default /var/tmp/logarithm-bench-baseline, kept
# for the next run) and hands it to the bench as LOGARITHM_BENCH_BASELINE; or set
# LOGARITHM_BENCH_BASELINE=/path/to/logarithmd directly.
set -euo pipefail
cd "$(dirname "$0")/.."
baseline_tree=""
cleanup() {
    if [ -n "${MARIADB_DIR:-}" ]; then scripts/mariadb.sh stop "$MARIADB_DIR"; fi
    if [ -n "$baseline_tree" ]; then git worktree remove --force "$baseline_tree"; fi
}
trap cleanup EXIT
if [ -n "${LOGARITHM_BENCH_BASELINE_REV:-}" ] && [ -z "${LOGARITHM_BENCH_BASELINE:-}" ]; then
    baseline_tree="$(mktemp -d)/baseline"
    git worktree add --detach "$baseline_tree" "$LOGARITHM_BENCH_BASELINE_REV" >&2
    baseline_target="${LOGARITHM_BENCH_BASELINE_TARGET:-/var/tmp/logarithm-bench-baseline}"
    (cd "$baseline_tree" && CARGO_TARGET_DIR="$baseline_target" \
        cargo build --release -p logarithmd --locked)
    export LOGARITHM_BENCH_BASELINE="$baseline_target/release/logarithmd"
fi
scripts/test-image.sh
eval "$(scripts/mariadb.sh start)"
cargo build --release --workspace --bins --locked
"${CARGO_TARGET_DIR:-target}/release/logarithm-bench" "$@"
