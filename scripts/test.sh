#!/usr/bin/env bash
# The whole test suite, from a fresh machine of this kind: installs what the tests need
# from Debian's packages (MariaDB, static busybox, Prometheus, Chromium), checks the Docker engine, builds the
# offline test image, starts a throwaway MariaDB, then runs formatting and lint checks and
# every test in the workspace against real Docker, MariaDB and SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

missing=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server mariadb-client)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
# Prometheus and promtool: the observability tests scrape the daemons with a real one.
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || missing+=(prometheus)
# Chromium and its WebDriver: the web UI tests (tests/tests/ui.rs) drive a real browser.
{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || missing+=(chromium chromium-driver)
# debootstrap makes the container images' base; a virtualenv holds the manifest validators.
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

step "checking the Docker engine"
if ! docker info >/dev/null 2>&1; then
  echo "error: the Docker engine is unreachable (docker info failed). The end-to-end tests" >&2
  echo "run real containers: start dockerd and run this again." >&2
  exit 1
fi
scripts/test-image.sh

step "starting a throwaway MariaDB"
# The storage conformance suite fails instead of testing SQLite alone when MariaDB is missing.
export LOGARITHM_TEST_REQUIRE_MYSQL=1
eval "$(scripts/mariadb.sh start)"
trap 'scripts/mariadb.sh stop "$MARIADB_DIR"' EXIT
echo "MariaDB at $LOGARITHM_TEST_MYSQL_URL (datadir $MARIADB_DIR)"

step "cargo fmt --check"
cargo fmt --all -- --check

step "promtool: alert rules"
promtool check rules dashboards/alerts.yml
promtool test rules dashboards/alerts_test.yml

step "Kubernetes manifests: kustomize, OpenAPI schemas of 1.29 and 1.33, Prometheus objects"
scripts/validate-manifests.sh

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Docker-only build: logarithmd without the kubernetes feature links no kube"
cargo clippy -p logarithmd --no-default-features --all-targets --locked -- -D warnings
docker_only_deps="$(cargo tree -p logarithmd --no-default-features -e normal --prefix none --locked)"
if grep -Eq '^(kube|kube-client|k8s-openapi) ' <<<"$docker_only_deps"; then
  echo "error: logarithmd --no-default-features still depends on kube or k8s-openapi" >&2
  exit 1
fi

step "building the binaries the end-to-end tests start"
cargo build --workspace --bins --locked

step "container images: offline build (debug binaries), --help, /readyz from the image"
scripts/build-images.sh --profile debug --tag test --no-cargo
scripts/test-images.sh test

step "cargo test"
cargo test --workspace --locked -- --test-threads="${LOGARITHM_TEST_THREADS:-2}"
