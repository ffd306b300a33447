#!/usr/bin/env bash
# Runs Logarithm on this machine: logarithmd with its embedded SQLite storage (./data) and
# the antilog agent attached to the local Docker engine. Every container on the host,
# running or started later, is collected. Ctrl-C stops both.
#   LOGARITHM_LISTEN   address of the API (default 127.0.0.1:7300)
#   LOGARITHM_STORAGE  storage URL (default sqlite://data/logarithm.db; mysql://… works too)
set -euo pipefail
cd "$(dirname "$0")/.."

listen=${LOGARITHM_LISTEN:-127.0.0.1:7300}
storage=${LOGARITHM_STORAGE:-sqlite://data/logarithm.db}
mkdir -p data
token_file=data/agent.token
[ -s "$token_file" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$token_file"
token=$(cat "$token_file")

if ! docker info >/dev/null 2>&1; then
  echo "error: the Docker engine is unreachable (docker info failed); start dockerd first" >&2
  exit 1
fi

cargo build --release --bins --locked
bin=${CARGO_TARGET_DIR:-target}/release

# anonymous_read: reading needs no token on this local run (see docs/security.md).
"$bin/logarithmd" --listen "$listen" --storage-url "$storage" --ingest-token "$token" \
  --anonymous-read &
daemon=$!
trap 'kill -TERM $agent $daemon 2>/dev/null; wait $agent $daemon 2>/dev/null' EXIT INT TERM
for _ in $(seq 1 100); do
  curl -fsS "http://$listen/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
"$bin/antilog" --server-url "http://$listen" --token "$token" --data-dir data/antilog &
agent=$!
echo
echo "Logarithm is running. Reading needs no token here (anonymous_read is on). Try:"
echo "  curl -s http://$listen/api/v1/jobs | python3 -m json.tool"
echo "  curl -s http://$listen/api/v1/jobs/<id>/logs -H 'accept: text/plain'"
echo "Ctrl-C stops it."
wait $daemon
