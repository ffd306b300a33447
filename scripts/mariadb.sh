#!/usr/bin/env bash
# Starts a throwaway MariaDB in a temp dir on a free port and prints `export` lines for it.
#   eval "$(scripts/mariadb.sh start)"   -> sets LOGARITHM_TEST_MYSQL_URL, MARIADB_DIR, MARIADB_PID
#   scripts/mariadb.sh stop "$MARIADB_DIR"
# Installs Debian's mariadb-server if it is missing.
set -euo pipefail

need_pkg() {
  if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
    echo "mariadb-server is missing: installing it from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2 && apt-get install -y --no-install-recommends mariadb-server mariadb-client >&2
  fi
}

free_port() {
  python3 - <<'PY'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

start() {
  need_pkg
  local dir port bin
  dir=$(mktemp -d /tmp/logarithm-mariadb.XXXXXX)
  port=$(free_port)
  bin=$(command -v mariadbd || echo /usr/sbin/mariadbd)
  # mysql_install_db is the portable way to lay out an empty datadir.
  mariadb-install-db --no-defaults --user=root --datadir="$dir/data" --auth-root-authentication-method=normal \
    --skip-test-db >"$dir/install.log" 2>&1 || { cat "$dir/install.log" >&2; exit 1; }
  "$bin" --no-defaults --user=root --datadir="$dir/data" --port="$port" --bind-address=127.0.0.1 \
    --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" --skip-name-resolve \
    --innodb-buffer-pool-size=2G --innodb-log-file-size=1G --innodb-flush-log-at-trx-commit=2 --max-connections=500 \
    --max-allowed-packet=64M --log-error="$dir/error.log" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 120); do
    if mariadb --no-defaults -uroot -h127.0.0.1 -P"$port" -e 'SELECT 1' >/dev/null 2>&1; then
      echo "export LOGARITHM_TEST_MYSQL_URL=mysql://root@127.0.0.1:$port"
      echo "export MARIADB_DIR=$dir"
      echo "export MARIADB_PID=$pid"
      echo "export MARIADB_PORT=$port"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "MariaDB failed to start; its log:" >&2; cat "$dir/error.log" >&2; exit 1
    fi
    sleep 0.5
  done
  echo "MariaDB did not answer within 60 s; its log:" >&2; cat "$dir/error.log" >&2; exit 1
}

stop() {
  local dir=${1:?datadir}
  if [ -f "$dir/mysqld.pid" ]; then kill "$(cat "$dir/mysqld.pid")" 2>/dev/null || true; fi
  for _ in $(seq 1 60); do [ -f "$dir/mysqld.pid" ] || break; sleep 0.5; done
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) shift; stop "$@" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
