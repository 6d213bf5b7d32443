#!/usr/bin/env bash
# The main job on the embedded default: online RL fine-tuning of the diffusion
# policy on the simulated FR3 (task lift), the whole ROS 2 node stack, with
# Mechanic choosing the learning rate. Ctrl-C stops it; the learning curve is
# written to runs/finetune/learning_curve.png.
#
# The policy starts from checkpoints/lift_demos when the repository ships it:
# checkpoints/lift_pretrained fine-tuned on 50 demonstrations of the task (4.1
# robot minutes; mechanic-rl finetune-demos, Mechanic, no learning rate). Without
# it, from checkpoints/lift_pretrained; without that, one made here first: 100
# noisy-expert demonstrations (mechanic-rl collect) and behaviour-cloning
# pretraining (mechanic-rl pretrain), both cached under runs/ so a second run
# goes straight to the stack.
#
# Extra arguments go to `mechanic-rl finetune` (e.g. episodes:=50 task:=lift).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export MUJOCO_GL=${MUJOCO_GL:-egl}
CKPT=checkpoints/lift_demos
[ -f "$CKPT/model.safetensors" ] || CKPT=checkpoints/lift_pretrained
if [ ! -f "$CKPT/model.safetensors" ]; then
  CKPT=runs/pretrain/lift
  if [ ! -f "$CKPT/model.safetensors" ]; then
    if [ ! -f runs/demos/lift/.complete ]; then
      echo "[run] recording 100 noisy-expert demonstrations of the lift task (runs/demos/lift)"
      rm -rf runs/demos/lift
      "$BIN/mechanic-rl" collect --task lift --episodes 100 --out runs/demos/lift
      touch runs/demos/lift/.complete
    fi
    echo "[run] pretraining the diffusion policy from the demonstrations (runs/pretrain/lift)"
    "$BIN/mechanic-rl" pretrain --data runs/demos/lift --out "$CKPT.partial"
    rm -rf "$CKPT" && mv "$CKPT.partial" "$CKPT"
  fi
fi
# The distillation learner mixes the demonstrations the policy was fine-tuned on into every batch: the
# 50 clean ones of checkpoints/lift_demos (the simulated teleoperator, reset seeds 5000-5049), recorded
# here once (about 40 s) unless demos:= names others.
EXTRA=()
if [[ " $* " == *" algorithm:=distill "* && " $* " != *" demos:="* ]]; then
  DEMOS=runs/demos_clean50
  if [ ! -f "$DEMOS/.complete" ]; then
    echo "[run] recording the 50 clean demonstrations lift_demos was fine-tuned on ($DEMOS)"
    rm -rf "$DEMOS"
    "$BIN/mechanic-rl" collect --task lift --noise 0 --episodes 50 --seed 5000 --out "$DEMOS" --quiet
    touch "$DEMOS/.complete"
  fi
  EXTRA=(demos:="$DEMOS")
fi
echo "[run] fine-tuning $CKPT on the simulated FR3 with the ROS 2 node stack (Ctrl-C to stop)"
exec "$BIN/mechanic-rl" finetune checkpoint:="$CKPT" "${EXTRA[@]}" "$@"
