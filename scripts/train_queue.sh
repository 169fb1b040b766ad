#!/usr/bin/env bash
# The long CPU queue behind docs/results.md: every step resumes where it stopped (finished grid
# cells are skipped, per-sample cells keep their finished batches, training resumes per epoch,
# finished training stages are reused). Start or restart it from the repository root with:
#   setsid nohup bash scripts/train_queue.sh >> runs/queue.log 2>&1 &
# then collect finished results into the page with: python scripts/results_page.py --collect runs/grid
set -uo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/deepsloth ]; then   # a fresh machine: the project's environment first
  python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 && .venv/bin/pip install -q -e ".[test,interop]"
fi
. .venv/bin/activate
mkdir -p runs
deepsloth data info 2>/dev/null | grep -q "^cifar10 " || \
  deepsloth data import cifar10 ../shared/data/cifar10-jpeg-train.zip ../shared/data/cifar10-jpeg-test.zip
export DEEPSLOTH_PROGRESS_INTERVAL=120
run() { echo "== $(date -u +%F' '%H:%M:%S) $*"; nice -n 19 "$@" || echo "!! failed ($?): $*"; }
R=resnet56_sdn_cifar10
M=mobilenet_sdn_cifar10
GRID="deepsloth grid --n 1000 --out runs/grid --device cpu --model"
# Ordered so that one 180-minute CPU session finishes whole studies: every result lands as a small JSON
# that is copied into docs/results/ (the runs/ folder does not outlive a session's machine).
# 1. cross-architecture transfer between the shipped models, both directions (issue 17)
run deepsloth transfer --surrogate $M --victim $R --n 500 --out runs/transfer --device cpu
run deepsloth transfer --surrogate $R --victim $M --n 500 --out runs/transfer --device cpu
# 2. transfer scenarios against MobileNet SDNs (issue 17), short CPU recipe
run deepsloth transfer scenario2 --arch mobilenet --classes 5 --shared 0 2 4 --epochs 5 --ic-epochs 1 \
    --n 500 --out runs/transfer --device cpu
run deepsloth transfer scenario1 --victim $M --arch mobilenet --fractions 10 25 50 100 --epochs 5 --ic-epochs 1 \
    --n 500 --out runs/transfer --device cpu
# 3. the cheap cells of the attack grid on both shipped models (issue 13); cells already saved in
#    docs/results/grid are seeded into runs/grid so they are skipped, not recomputed
mkdir -p runs/grid && cp -rn docs/results/grid/*/ runs/grid/ 2>/dev/null
for m in $R $M; do
  run $GRID $m --attacks clean pgd pgd-avg deepsloth-linf-sample deepsloth-linf-universal deepsloth-linf-class \
      deepsloth-l1-universal deepsloth-l2-universal
done
run deepsloth represent --model $R --class 3 --n 100 --out runs/represent --device cpu
# 4. the VGG16-BN SDN for the zoo (issue 15): about 6 CPU-hours, more than one session
run deepsloth zoo train vgg16bn --out runs/vgg16bn_sdn_cifar10
# 5. the defence study on MobileNet (issue 16): PGD-trained CNN warm-started from the shipped backbone
#    (fast single-step AT on a CPU budget), then IC-only training undefended and with each adversarial term
run python scripts/export_backbone.py $M runs/at/mobilenet-cnn
run deepsloth train --arch mobilenet --mode cnn --from runs/at/mobilenet-cnn --recipe fast --epochs 6 --lr 0.05 \
    --adv pgd --adv-fast --out runs/at/mobilenet-cnn-pgdat --resume --device cpu
for adv in none pgd pgd-avg pgd-max deepsloth mixed; do
  extra=(); [ "$adv" != none ] && extra=(--adv "$adv" --adv-steps 5)
  run deepsloth train --arch mobilenet --mode ic-only --from runs/at/mobilenet-cnn-pgdat --recipe fast --epochs 3 \
      "${extra[@]}" --out runs/at/mobilenet-ic-$adv --resume --device cpu
  run deepsloth grid --n 500 --out runs/defence --device cpu --model runs/at/mobilenet-ic-$adv \
      --attacks pgd deepsloth-linf-sample deepsloth-linf-universal
done
run deepsloth grid --n 500 --out runs/defence --device cpu --model $M --attacks pgd deepsloth-linf-sample deepsloth-linf-universal
# 6. the expensive grid cells (hundreds of steps per input, K chains for PGD-max, a universal attack per class)
for m in $R $M; do
  run $GRID $m --attacks uap deepsloth-l1-sample pgd-max deepsloth-l2-sample deepsloth-l1-class deepsloth-l2-class
done
run $GRID vgg16bn_sdn_cifar10 --attacks all
echo "== $(date -u +%F' '%H:%M:%S) queue finished"
