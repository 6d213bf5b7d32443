"""A uniform average of the weights of policies fine-tuned from one checkpoint (a "model soup").

Fine-tuning `lift_pretrained` on the same 50 clean demonstrations with four seeds scores 348-388 of 400
(docs/history.md, "The fine-tuning draw"). If what separates the seeds is variance around one solution,
averaging their weights (Wortsman et al., ICML 2022: fine-tuned models from one start often lie in one
basin, and their average is often better than each) should score at least their best. This writes the
average as an ordinary policy checkpoint; the policies must share an architecture.

    PYTHONPATH=$PWD .venv/bin/python studies/weight_soup.py runs/soup4 checkpoints/lift_demos \\
        runs/bc50_1k_s1 runs/bc50_1k_s2 runs/bc50_1k_s3
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the averaged checkpoint's directory")
    ap.add_argument("checkpoints", nargs="+", help="policy checkpoints of one architecture")
    args = ap.parse_args(argv)
    from mechanic_rl_ros.policy.checkpoint import read_checkpoint, write_checkpoint

    reads = [read_checkpoint(c) for c in args.checkpoints]
    arch = {r[0]["arch_id"] for r in reads}
    if len(arch) != 1:
        raise SystemExit(f"checkpoints: architectures {sorted(arch)}; expected one")
    states = [r[1] for r in reads]
    soup = {k: (sum(s[k].double() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}
    write_checkpoint(args.out, soup, reads[0][0])
    print(f"average of {len(states)} policies -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
