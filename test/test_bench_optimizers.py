"""bench/bench_optimizers.py: Mechanic against an Adam grid for the distillation learner, through the real
train-distill in subprocesses (a tiny policy, a few gradient steps), its table, verdict, figure and resume."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_optimizers", REPO / "bench" / "bench_optimizers.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_every_configuration_and_seed_runs_and_an_interrupted_bench_resumes(tiny_ckpt, tmp_path, capsys):
    from mechanic_rl_ros.jobs.collect import CollectConfig, collect

    collect(CollectConfig(episodes=1, out=str(tmp_path / "demos"), noise=0.0, seed=5000, progress=False))
    bench = load_bench()
    args = ["--checkpoint", str(tiny_ckpt), "--demos", str(tmp_path / "demos"), "--out", str(tmp_path / "b"),
            "--offline-steps", "3", "--eval-episodes", "1", "--seeds", "0", "1", "--lrs", "1e-3", "--jobs", "2"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert out.count("done in") == 4, out
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert sorted((r["config"], r["seed"]) for r in res["runs"]) == [
        ("adam_0.001", 0), ("adam_0.001", 1), ("mechanic", 0), ("mechanic", 1)]
    assert all(len(r["losses"]) == 0 and r["episodes"] == 1 for r in res["runs"])  # a loss line every 100 steps
    for name in ("mechanic", "adam_0.001"):
        assert (tmp_path / "b" / f"{name}_s0" / "learner" / "policy").is_dir()
    assert "| mechanic |" in out and "| adam_0.001 |" in out and "the best Adam point (adam_0.001)" in out
    assert (tmp_path / "b" / "optimizers.png").stat().st_size > 0
    adam = json.loads((tmp_path / "b" / "adam_0.001_s1" / "final.json").read_text())["learner"]
    assert (adam["optimizer"], adam["lr"]) == ("adam", 1e-3)

    trained = sum(r["wall_s"] for r in res["runs"]) / 60
    assert bench.main(args) == 0  # every run on record: nothing runs again
    assert "done in" not in capsys.readouterr().out
    # the record keeps the runs' own training time, not only the resumed invocation's
    assert f"the runs' train-distill {trained:.1f} min summed" in (tmp_path / "b" / "results.md").read_text()


def test_the_verdict_allows_one_standard_error_of_the_difference():
    bench = load_bench()

    def rows(name, successes):
        return [{"config": name, "seed": s, "successes": k, "episodes": 100, "success": k / 100, "losses": []}
                for s, k in enumerate(successes)]

    names = ["mechanic", "adam_0.001", "adam_0.0001"]
    close = rows("mechanic", [88, 90, 86]) + rows("adam_0.001", [93, 87, 90]) + rows("adam_0.0001", [70, 75, 72])
    table, verdict = bench.summarise(close, names)
    assert [t["config"] for t in table] == names and abs(table[0]["mean"] - 0.88) < 1e-9
    assert "(adam_0.001)" in verdict and ": within one standard error" in verdict
    far = rows("mechanic", [80, 81, 79]) + rows("adam_0.001", [90, 91, 89]) + rows("adam_0.0001", [70, 75, 72])
    assert "NOT within" in bench.summarise(far, names)[1]
