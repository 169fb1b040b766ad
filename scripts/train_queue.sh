#!/usr/bin/env bash
# The long CPU training queue (docs/results.md): every step resumes where it stopped.
# Start or restart it with:   setsid nohup bash scripts/train_queue.sh > runs/queue.log 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
mkdir -p runs
run() { echo "== $(date -u +%H:%M:%S) $*"; nice -n 19 "$@" || echo "!! failed: $*"; }
run deepsloth zoo train vgg16bn --out runs/vgg16bn_sdn_cifar10
