#!/usr/bin/env bash
# Total order at the assignment's hardest setting and beyond, for one or more servers side by
# side in one run: 10 of them, 250 text clients over 10 rooms, loadgen
# ordering's own proxy delaying each server-to-server datagram up to 5 ms (and holding 1,000 at
# most, as the public proxy). For each binary and rate it prints loadgen's table (deliveries,
# violations, latency, datagrams between servers per message) and the routers' CPU time.
#
#   results/cluster-speed.sh [SERVER...]
#   RATES="1000 2000" SECONDS_EACH=10 results/cluster-speed.sh "old/router --cores 1" ./chatserver
#
# A SERVER is a command that takes the original chatserver's arguments (`-o total FILE INDEX`);
# the default is "target/release/router --cores 1".
#
# Run from the repository root on an idle machine; JSON records go to results/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p loadgen -p chat-router
routers=("$@")
[ ${#routers[@]} -eq 0 ] && routers=("target/release/router --cores 1")
rates=${RATES:-1000}
seconds=${SECONDS_EACH:-10}
dir=$(mktemp -d)
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap stop EXIT
base=${BASE_PORT:-47000}
for i in $(seq 1 10); do
    echo "127.0.0.1:$((base + 100 + i)),127.0.0.1:$((base + i))"
done > "$dir/servers.txt"
ticks=$(getconf CLK_TCK)

for rate in $rates; do
    # 250 clients, each every 250000/rate ms: `rate` messages a second in all.
    interval_us=$((250000000 / rate))
    messages=$((seconds * rate / 250))
    for router in "${routers[@]}"; do
        echo "== $router, total order, $rate msgs/s for ${seconds}s"
        for i in $(seq 1 10); do
            # shellcheck disable=SC2086 # a command with its options
            $router -o total "$dir/servers.txt" "$i" > /dev/null &
            pids+=($!)
        done
        sleep 1
        target/release/loadgen ordering --cluster "$dir/servers.txt" --order total \
            --clients 250 --rooms 10 --messages "$messages" --interval "${interval_us}us" \
            --drain 10s --proxy-delay 5ms --label "$router" --out results || true
        cpu=0
        for p in "${pids[@]}"; do
            read -r -a stat < "/proc/$p/stat"
            cpu=$((cpu + stat[13] + stat[14]))
        done
        total=$((rate * seconds))
        echo "routers' CPU: $((cpu * 1000 / ticks)) ms in all, $((cpu * 1000000000 / ticks / total)) ns per message"
        for p in "${pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
        pids=()
    done
done
