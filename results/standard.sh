#!/usr/bin/env bash
# The standard scenarios, as committed in results/. Run from the repository root on an idle
# machine; each run writes its JSON and .hgrm files here.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p loadgen
lg() { target/release/loadgen --quiet --out results "$@"; }
for io in uring mmsg; do
    lg --clients 10000 --members 10 --rate max --io "$io"     # saturation: router / ceiling
    lg --clients 10000 --members 10 --rate 15000 --io "$io"   # about half of it: latency
done
lg --clients 10000 --zipf 1.0 --channels 1000 --rate 500 --io uring   # a few huge channels
lg --scenario federation --clients 10000 --members 10 --neighbors 2 --rate 10000 --io uring
lg --scenario churn --clients 10000 --members 10 --churn-rate 2000 --rate 15000 --io uring
# Forged sources need a raw socket: root or CAP_NET_RAW.
lg --scenario hostile --clients 10000 --members 10 --rate 15000 --hostile-rate 1000000 --io uring
