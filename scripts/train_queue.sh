#!/usr/bin/env bash
# The long CPU queue behind docs/results.md. Start or restart it from the repository root with:
#   setsid nohup bash scripts/train_queue.sh >> runs/queue.log 2>&1 &
# or run chosen steps:  bash scripts/train_queue.sh vgg defence
#
# Without arguments it runs, in order, every step whose results are not yet saved under
# docs/results/ (`python scripts/results_page.py --todo` lists them). Each step is sized to finish
# within a few hours on 2 CPU cores, because runs/ does not outlive the machine it ran on;
# at its end the step copies its small result files into docs/results/ (commit them). Inside a
# step everything resumes: finished grid cells are skipped, per-sample cells keep their finished
# batches, training resumes per epoch and finished training stages are reused.
# Run nothing heavy beside it (tests, benchmarks, another attack): two torch processes on 2 cores oversubscribe
# the threads, and small-batch work suffers most (the MobileNet UAP cell took 2.5-4.5 min per pass beside another
# attack, 12 s alone). Pause it instead: kill -STOP, then -CONT, the running deepsloth process.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/deepsloth ]; then   # a fresh machine: the project's environment first
  python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 && .venv/bin/pip install -q -e ".[test,interop]"
fi
. .venv/bin/activate
mkdir -p runs
imported() { deepsloth data info 2>/dev/null | grep "^$1 " | grep -vq "not imported"; }
imported cifar10 || \
  deepsloth data import cifar10 ../shared/data/cifar10-jpeg-train.zip ../shared/data/cifar10-jpeg-test.zip
export DEEPSLOTH_PROGRESS_INTERVAL=120
run() { echo "== $(date -u +%F' '%H:%M:%S) $*"; nice -n 19 "$@" || echo "!! failed ($?): $*"; }
page() { python scripts/results_page.py "$@"; }
R=resnet56_sdn_cifar10
M=mobilenet_sdn_cifar10
GRID="deepsloth grid --n 1000 --out runs/grid --device cpu --model"
CHEAP="clean pgd pgd-avg deepsloth-linf-sample deepsloth-linf-universal deepsloth-linf-class deepsloth-l1-universal deepsloth-l2-universal"
# The expensive cells, roughly cheapest first: scaled from the l_inf cells' fp32 times, on the ResNet-56 about
# 0.7 / 1.3 / 2.9 / 1.6 / 2.7 h for pgd-max, l1-sample, l2-sample, l1-class, l2-class (UAP stops at a fooling rate
# of 0.8, so its time varies), about a quarter of that on the MobileNet. `results_page.py --missing MODEL` lists a
# model's unsaved cells in this order. VGG16-BN and ResNet-56 cells are crafted with --amp auto: under bf16 autocast
# on a CPU with native bf16 (docs/method.md §3.7: about 2.2x faster on an AMX CPU; their tables label them "bf16"),
# in fp32 on an AVX2-only CPU, where bf16 is emulated and about 25x slower. MobileNet's depthwise convolutions gain
# nothing from bf16, so it stays fp32. Without native bf16, `--todo` puts grid-expensive before the VGG16-BN steps.
missing() { python scripts/results_page.py --missing "$1"; }
seed_grid() {   # cells already saved in docs/results/grid are copied into runs/grid, so they are skipped
  mkdir -p runs/grid && cp -rn docs/results/grid/*/ runs/grid/ 2>/dev/null; true
}

# cross-architecture transfer between the shipped models, both directions (~25 min)
step_transfer() {
  run deepsloth transfer --surrogate $M --victim $R --n 500 --out runs/transfer --device cpu
  run deepsloth transfer --surrogate $R --victim $M --n 500 --out runs/transfer --device cpu
  page --collect-transfer runs/transfer
}
# scenario 2, c = 5 classes sharing 0, 2 or 4 with the victim (MobileNet, short recipe; ~60 min)
step_scenario2() {
  run deepsloth transfer scenario2 --arch mobilenet --classes 5 --shared 0 2 4 --epochs 5 --ic-epochs 1 \
      --n 500 --out runs/transfer --device cpu
  page --collect-transfer runs/transfer
}
# scenario 1, MobileNet surrogates on 10/25/50/100% of the data against the shipped one (~60 min)
step_scenario1() {
  run deepsloth transfer scenario1 --victim $M --arch mobilenet --fractions 10 25 50 100 --epochs 5 --ic-epochs 1 \
      --n 500 --out runs/transfer --device cpu
  page --collect-transfer runs/transfer
}
# internal representations of 500 test cats on the shipped ResNet-56 SDN (~10 min)
step_represent() {
  run deepsloth represent --model $R --class 3 --n 500 --out runs/represent --device cpu && \
    rm -rf docs/results/represent && mkdir -p docs/results/represent && \
    for f in represent.json summary.png images.png exit-01.png exit-20.png exit-28.png; do
      cp runs/represent/$f docs/results/represent/; done
}
# the cheap cells of the attack grid on both shipped models
step_grid-cheap() {
  seed_grid
  for m in $R $M; do run $GRID $m --attacks $CHEAP; page --collect runs/grid; done
}
# the VGG16-BN SDN (12 + 2 epochs, about 10 min per CNN epoch), installed fp16.
# Once shipped but below 90%: one more CNN stage continuing the shipped model's backbone (20 one-cycle epochs at
# lr 0.05 with cutout 16 under --amp auto: about 100 min on an AMX CPU, 220 in fp32 elsewhere; the stages so far are
# in models/zoo_recipes.py: after # 12 + 10 + 10 epochs without cutout it was at 88.4%, training accuracy 96.8%), new ICs (2 epochs),
# installed in its place (accuracy re-measured from fp16); the grid cells made on the earlier weights are deleted
# (--prune-stale) and rerun by vgg-grid
step_vgg() {
  local V=vgg16bn_sdn_cifar10
  if [ ! -f src/deepsloth/zoo/$V/model.json ]; then
    run deepsloth zoo train vgg16bn --out runs/$V --device cpu --install
    return
  fi
  run deepsloth train --arch vgg16bn --mode cnn --from $V --recipe fast --epochs 20 --lr 0.05 \
      --cutout 16 --out runs/vgg-more/cnn-next --resume --device cpu --amp auto
  run deepsloth train --arch vgg16bn --mode ic-only --from runs/vgg-more/cnn-next --recipe fast --epochs 2 \
      --out runs/vgg-more/sdn-next --resume --device cpu --amp auto
  # installed only when its final exit beats the shipped one (a stage that made it worse is left in runs/)
  [ -f runs/vgg-more/sdn-next/model.json ] && python -c "import json, sys; acc = lambda p: json.load(open(p))\
['accuracy']['final']; sys.exit(acc('runs/vgg-more/sdn-next/model.json') <= acc('src/deepsloth/zoo/$V/model.json'))" \
  && run python -c "from pathlib import Path; from deepsloth.data import \
load_dataset; from deepsloth.experiments.zoo import install; install(Path('runs/vgg-more/sdn-next'), '$V', 'float16', \
test_set=load_dataset('cifar10', 'test'))" && run python scripts/results_page.py --prune-stale --sweep $V
}
# Tiny ImageNet subset models (short recipe) and the grid's main cells on each; an arch whose cells are
# saved already is skipped. Then an audit of the MobileNet one, its report kept in docs/results/tiny-audit
TINY_CELLS="clean pgd-linf-sample deepsloth-linf-sample deepsloth-linf-universal"
tiny_saved() { for c in $TINY_CELLS; do ls docs/results/tiny/$1-sdn/$c-*.json >/dev/null 2>&1 || return 1; done; }
step_tiny() {
  imported tinyimagenet || \
    deepsloth data import tinyimagenet ../shared/data/tiny-imagenet-200-subset.zip
  for a in mobilenet resnet56; do
    tiny_saved $a && continue
    amp=off; [ $a = resnet56 ] && amp=auto   # bf16 autocast pays off for ResNet-56 only (docs/method.md §3.7)
    run deepsloth zoo train $a --dataset tinyimagenet --recipe fast --epochs 4 --ic-epochs 1 \
        --out runs/tiny/$a --device cpu --amp $amp
    run deepsloth grid --model runs/tiny/$a/sdn --n 500 --out runs/tiny-grid --device cpu --amp $amp \
        --attacks $TINY_CELLS
    page --collect-tiny runs/tiny-grid
  done
  if [ -d runs/tiny/mobilenet/sdn ] && [ ! -f docs/results/tiny-audit/report.json ]; then
    run deepsloth audit --model runs/tiny/mobilenet/sdn --data test --n 500 --out runs/tiny-audit --device cpu && \
      mkdir -p docs/results/tiny-audit && cp runs/tiny-audit/report.md runs/tiny-audit/report.json docs/results/tiny-audit/
  fi
}
# the defence study on MobileNet: a PGD-trained CNN warm-started from the shipped backbone
# (fast single-step AT), then IC-only training on it, undefended and with each adversarial term
# (3-step attacks of 3/255 from a random start, on a fixed seeded 30% of the training data), each attacked on 500
# test images
step_defence() {
  run deepsloth train --arch mobilenet --mode cnn --from $M --recipe fast --epochs 4 --lr 0.05 \
      --adv pgd --adv-fast --out runs/at/mobilenet-cnn-pgdat --resume --device cpu
  for adv in none pgd pgd-avg deepsloth mixed pgd-max; do
    extra=(); [ "$adv" != none ] && extra=(--adv "$adv" --adv-steps 3 --adv-step-size 3/255)
    # PGD-max runs one chain per exit (about 20 forward/backward passes per input for 14 exits): a quarter of
    # each batch gets an adversarial version, to keep it within a few hours
    [ "$adv" = pgd-max ] && extra+=(--adv-share 0.25)
    run deepsloth train --arch mobilenet --mode ic-only --from runs/at/mobilenet-cnn-pgdat --recipe fast --epochs 2 \
        --data-fraction 0.3 "${extra[@]}" --out runs/at/mobilenet-ic-$adv --resume --device cpu
    run deepsloth grid --n 500 --out runs/defence --device cpu --model runs/at/mobilenet-ic-$adv \
        --attacks clean pgd deepsloth-linf-sample deepsloth-linf-universal
    page --collect-defence runs/defence
  done
  run deepsloth grid --n 500 --out runs/defence --device cpu --model $M \
      --attacks clean pgd deepsloth-linf-sample deepsloth-linf-universal
  page --collect-defence runs/defence
}
# the expensive cells (hundreds of steps per input, K chains for PGD-max, a universal attack per class).
# Several runs: each finished cell is saved at once, so a rerun starts from the missing ones; in runs/grid a
# per-sample cell keeps its finished batches, a class-universal one its finished classes, UAP its last finished
# pass. The ResNet-56 goes first: its per-sample l_1 / l_2 cells decided the headline on that model.
step_grid-expensive() {
  seed_grid
  for cell in $(missing $R); do run $GRID $R --attacks $cell --amp auto; page --collect runs/grid; done
  for cell in $(missing $M); do run $GRID $M --attacks $cell; page --collect runs/grid; done
}
# the rest of the grid on the VGG16-BN SDN (its first five cells were crafted in fp32)
step_vgg-grid() {
  seed_grid
  for cell in $(missing vgg16bn_sdn_cifar10); do
    run $GRID vgg16bn_sdn_cifar10 --attacks $cell --amp auto; page --collect runs/grid
  done
}

# why universal DeepSloth in l_2 / l_1 is weak: the same schedules with budgets matched to what the l_inf
# universal perturbation spends in that norm (l_2 1.67, l_1 90), on the MobileNet (about 11 + 6 CPU min alone)
step_budget() {
  # l_2: the budget decays by 0.9 ten times (x0.349), so a starting eps of 4.8 ends at 1.67
  run deepsloth attack --model $M --attack deepsloth-l2-universal --eps 4.8 --n 1000 --device cpu --out runs/probe
  run deepsloth attack --model $M --attack deepsloth-l1-universal --eps 90 --n 1000 --device cpu --out runs/probe
  page --collect-budget runs/probe
}
# why per-sample DeepSloth in l_2 / l_1 falls short of l_inf (46.7% / 72.8% vs 98.0% on the MobileNet): the
# same schedules with budgets matched to what the per-sample l_inf attack spends in that norm (l_2 1.28 on average:
# a start of 3.67 decays to 1.28; l_1 63), first 500 test images, thresholds from the grid's 1,000 (about 17 + 33 CPU min)
budget_sample() {   # MODEL [attack options]
  local model=$1 attack eps; shift
  for a in "l1-sample 63" "l2-sample 3.67"; do   # a run saved earlier is not repeated
    read -r attack eps <<< "$a"
    ls docs/results/budget/$model/deepsloth-$attack-*.json >/dev/null 2>&1 && continue
    run deepsloth attack --model $model --attack deepsloth-$attack --eps $eps --n 500 --calib-n 1000 --device cpu \
        --out runs/probe "$@"
  done
  page --collect-budget runs/probe
}
step_budget-sample() { budget_sample $M; }
# the same on the VGG16-BN SDN, whose per-sample l_inf attack spends the same (l_2 1.29, l_1 64), bf16 where native
# (about 60 CPU min)
step_budget-sample-vgg() { budget_sample vgg16bn_sdn_cifar10 --amp auto; }
# and on the ResNet-56 SDN, whose per-sample l_inf attack spends the same too (l_2 1.30, l_1 65)
step_budget-sample-resnet() { budget_sample $R --amp auto; }

# MSDNet (docs/method.md §2.4): joint training of its 7 exits, 8 one-cycle epochs of about 8 CPU min each (runs/
# does not outlive the machine: one sitting), installed into the package zoo (fp16) when finished
step_msdnet() {
  [ -f src/deepsloth/zoo/msdnet_cifar10/model.json ] || \
    run deepsloth zoo train msdnet --out runs/msdnet_cifar10 --device cpu --install
}
# the grid on a model family beyond the three SDNs: every l_inf cell and per-sample DeepSloth in l_2 / l_1, cheapest
# first (`results_page.py --missing` lists the unsaved ones), and its clean sweep
family_grid() {
  local D=$1; shift
  seed_grid
  for cell in $(missing $D); do run $GRID $D --attacks $cell "$@"; page --collect runs/grid; done
  [ -f docs/results/sweeps/$D.json ] || page --sweep $D
}
# MSDNet (about 2.5 CPU h alone, the l_2 cell half of it). Evaluated at RAD 1% besides the paper's 5% and 15%: on
# this MSDNet the paper's calibration picks q = 0.05 at both, where exit 1 answers every input (docs/method.md §2.4)
step_msdnet-grid() { family_grid msdnet_cifar10 --rad 1 5 15; }
# the defence study (docs/defences.md) on both shipped models, first 500 test images: each default defence against
# the non-adaptive and the adaptive attacker; the ResNet-56 SDN's attacks under bf16 where the CPU has it natively
step_defend() {
  run deepsloth defend --model $M --n 500 --out runs/defend --device cpu
  page --collect-defend runs/defend
  run deepsloth defend --model $R --n 500 --out runs/defend --device cpu --amp auto
  page --collect-defend runs/defend
}
# cross-family transfer between a model family and the ResNet-56 SDN, both directions (per-sample and universal l_inf)
family_transfer() {
  local D=$1; shift
  mkdir -p runs/transfer/$D/adversarial   # the grid's finished crafting on $D is the same: reused, not crafted again
  cp -n runs/grid/$D/adversarial/deepsloth-linf-{sample,universal}-*.{safetensors,json} runs/transfer/$D/adversarial/ \
      2>/dev/null
  for pair in "$D $R" "$R $D"; do
    read -r s v <<< "$pair"
    run deepsloth transfer --surrogate $s --victim $v --attacks deepsloth-linf-sample deepsloth-linf-universal \
        --n 1000 --out runs/transfer --device cpu "$@"
  done
  page --collect-transfer runs/transfer
}
step_msdnet-transfer() { family_transfer msdnet_cifar10 --rad 1 5 15; }
# the early-exit ViT (docs/method.md §2.5): joint training of its 6 exits, two one-cycle stages (12 then 20 epochs)
# of about 5 min per epoch on one busy core, installed into the package zoo (fp16) when finished
step_vit() {
  [ -f src/deepsloth/zoo/vit_cifar10/model.json ] || \
    run deepsloth zoo train vit --out runs/vit_cifar10 --device cpu --install
}
# the ViT's grid (fp32: bf16 gains nothing at its width) and its transfer to and from the ResNet-56 SDN
step_vit-grid() { family_grid vit_cifar10; }
step_vit-transfer() { family_transfer vit_cifar10; }

steps=("$@")
[ ${#steps[@]} -eq 0 ] && mapfile -t steps < <(python scripts/results_page.py --todo)
for s in "${steps[@]}"; do
  declare -F "step_$s" >/dev/null || { echo "unknown step $s"; exit 2; }
  echo "== $(date -u +%F' '%H:%M:%S) step $s"
  "step_$s"
done
page
echo "== $(date -u +%F' '%H:%M:%S) queue finished: ${steps[*]}"
