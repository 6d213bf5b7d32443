"""``mechanic-rl``: one command-line entry point with a sub-command per job.

Each sub-command lives next to the code it drives and exposes ``main(argv)``;
this module only dispatches, importing the sub-command lazily so that
``mechanic-rl --help`` stays fast and does not pull in torch or MuJoCo.
"""
from __future__ import annotations

import importlib
import sys

#: sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("mechanic_rl_ros.jobs.collect", "record scripted-expert demonstrations as MCAP"),
    "pretrain": ("mechanic_rl_ros.jobs.pretrain", "pretrain the diffusion policy from demonstrations"),
    "eval": ("mechanic_rl_ros.jobs.evaluate", "evaluate a policy checkpoint in the simulated FR3"),
    "finetune-demos": ("mechanic_rl_ros.jobs.finetune_demos",
                       "fine-tune the policy on a few demonstrations (Mechanic, no learning rate)"),
    "train-rl": ("mechanic_rl_ros.jobs.train_rl", "headless online RL fine-tuning (no ROS)"),
    "train-select": ("mechanic_rl_ros.jobs.train_select",
                     "headless off-policy fine-tuning: a critic picks among the frozen policy's proposals"),
    "train-distill": ("mechanic_rl_ros.jobs.train_distill",
                      "headless twin of the stack's distillation learner (trains the policy's own layers)"),
    "finetune": ("mechanic_rl_ros.stack.runner", "run the whole ROS 2 node stack (venv runner of finetune.launch.py)"),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: mechanic-rl <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "Run 'mechanic-rl <command> --help' for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mechanic-rl: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
