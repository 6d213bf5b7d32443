#!/usr/bin/env bash
# One recovery experiment of docs/world.md ("The online phase after it") for one scene variation and one
# learner seed, from the repository root with the project venv built (make setup):
#   1. the augmented offline stage from lift_demos on the clean demonstrations (no robot time),
#   2. 30 robot minutes of the stack under the variation with the simulated operator stepping in only
#      after a failed grasp, corrections kept only from episodes that succeeded,
#   3. the saved policy evaluated alone on reset seeds 100000-100199 under the variation and on the
#      training scene, each paired with the offline stage's policy under the variation.
#
#   bash studies/recovery_run.sh WORLD SEED [ROS_DOMAIN_ID]     e.g.  bash studies/recovery_run.sh wide_fov 0 214
#
# Writes runs/aug_offline_s$SEED (reused when present), runs/rec_${WORLD}_s$SEED and runs/ev_*_${WORLD}_s$SEED.
# Needs runs/demos_clean50:  .venv/bin/mechanic-rl collect --noise 0 --episodes 50 --seed 5000 --out runs/demos_clean50
set -euo pipefail
world=${1:?scene variation, e.g. narrow_fov}
seed=${2:?learner seed}
export ROS_DOMAIN_ID=${3:-$((200 + seed))}
py=.venv/bin/python
cli=.venv/bin/mechanic-rl
off=runs/aug_offline_s$seed
run=runs/rec_${world}_s$seed

test -d runs/demos_clean50 || { echo "runs/demos_clean50 is missing (see the header)" >&2; exit 2; }
if [ ! -f "$off/learner/policy/model.safetensors" ]; then
    $cli train-distill --checkpoint checkpoints/lift_demos --demos "$PWD/runs/demos_clean50" \
        --distill-config config/distill_augmented.yaml --total-steps 0 --final-eval-episodes 0 \
        --seed "$seed" --threads 1 --out "$off"
fi
test -f "runs/ev_${world}_offline_s$seed/eval.json" ||
    $cli eval --checkpoint "$off/learner/policy" --world "$world" --episodes 200 --threads 1 \
        --out "runs/ev_${world}_offline_s$seed"
$py -m mechanic_rl_ros.stack.runner checkpoint:="$PWD/$off/learner/policy" algorithm:=distill \
    distill_config:="$PWD/config/distill_recover.yaml augment_warp=1" demos:="$PWD/runs/demos_clean50" \
    world:="$world" interventions:=sim seed:="$seed" run_dir:="$run" \
    --set operator_node.off_centre_rule=false --robot-minutes 30
$cli eval --checkpoint "$run/learner/policy" --world "$world" --episodes 200 --threads 1 \
    --out "runs/ev_${world}_rec_${world}_s$seed" --compare "runs/ev_${world}_offline_s$seed/eval.json"
$cli eval --checkpoint "$run/learner/policy" --episodes 200 --threads 1 --out "runs/ev_default_rec_${world}_s$seed"
