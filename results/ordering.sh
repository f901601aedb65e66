#!/usr/bin/env bash
# The ordering scenario, as committed in results/: a cluster of 10 routers (one shard each)
# behind loadgen's proxy, 250 text clients, each mode, and total order with 2% of the
# server-to-server datagrams dropped. Run from the repository root on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p loadgen -p chat-router
dir=$(mktemp -d)
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap stop EXIT
base=${BASE_PORT:-47000}
for i in $(seq 1 10); do
    echo "127.0.0.1:$((base + 100 + i)),127.0.0.1:$((base + i))"
done > "$dir/servers.txt"

run() { # ORDER DROP
    target/release/loadgen proxy --cluster "$dir/servers.txt" --delay 20ms --drop "$2" &
    pids+=($!)
    for i in $(seq 1 10); do
        target/release/router --cores 1 --order "$1" --cluster "$dir/servers.txt" --index "$i" > /dev/null &
        pids+=($!)
    done
    sleep 1 # the routers bind within milliseconds; loadgen resends /join until answered anyway
    target/release/loadgen ordering --cluster "$dir/servers.txt" --order "$1" \
        --clients 250 --rooms 10 --messages 20 --interval 100ms --out results
    for p in "${pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
    pids=()
}
for order in unordered fifo total; do run "$order" 0; done
run total 0.02
