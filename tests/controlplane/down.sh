#!/usr/bin/env bash
# Stops the control plane started by up.sh DIR and removes DIR.
set -uo pipefail
dir=${1:?usage: down.sh DIR}
[ -f "$dir/pids" ] || { rm -rf "$dir"; exit 0; }
pids=$(cat "$dir/pids")
kill $pids 2>/dev/null
for _ in $(seq 1 50); do
  alive=0
  for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && break
  sleep 0.1
done
kill -9 $pids 2>/dev/null
rm -rf "$dir"
