#!/usr/bin/env bash
# Throughput benchmark (figures in docs/performance.md): starts a throwaway MariaDB,
# builds release binaries and runs target/release/logarithm-bench (all sections, or
# those named: scripts/bench.sh live read).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-image.sh
eval "$(scripts/mariadb.sh start)"
trap 'scripts/mariadb.sh stop "$MARIADB_DIR"' EXIT
cargo build --release --workspace --bins --locked
"${CARGO_TARGET_DIR:-target}/release/logarithm-bench" "$@"
