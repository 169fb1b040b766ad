#!/usr/bin/env bash
# The long CPU queue behind docs/results.md: every step resumes where it stopped (finished grid
# cells are skipped, per-sample cells keep their finished batches, training resumes per epoch).
# Start or restart it from the repository root with:
#   setsid nohup bash scripts/train_queue.sh >> runs/queue.log 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
mkdir -p runs
export DEEPSLOTH_PROGRESS_INTERVAL=120
run() { echo "== $(date -u +%F' '%H:%M:%S) $*"; nice -n 19 "$@" || echo "!! failed ($?): $*"; }
MODELS="resnet56_sdn_cifar10 mobilenet_sdn_cifar10"
GRID="deepsloth grid --n 1000 --out runs/grid --device cpu --model"
# 1. the cheap cells of the attack grid on both shipped models (docs/results.md)
for m in $MODELS; do
  run $GRID $m --attacks pgd pgd-avg deepsloth-linf-sample deepsloth-linf-universal deepsloth-linf-class \
      deepsloth-l1-universal deepsloth-l2-universal
done
# 2. the VGG16-BN SDN for the zoo
run deepsloth zoo train vgg16bn --out runs/vgg16bn_sdn_cifar10
# 3. the expensive cells (hundreds of steps per input, K chains for PGD-max, a universal attack per class)
for m in $MODELS; do
  run $GRID $m --attacks uap deepsloth-l1-sample pgd-max deepsloth-l2-sample deepsloth-l1-class deepsloth-l2-class
done
echo "== $(date -u +%F' '%H:%M:%S) queue finished"
