"""Progress of a fine-tuning run, for people: one line per finished episode
(success rate, robot minutes, policy version, Mechanic scale; with a person
taking over, the autonomous success rate and the share of steps they
commanded) and, when the run stops, a learning-curve PNG (success and
intervention rate against robot minutes: control steps at 10 Hz) and a CSV
of the episodes.

:class:`Progress` is plain Python (tested alone); :class:`MonitorNode` feeds
it from ``EpisodeEvent`` and ``LearnerStats`` in the runner's process.
"""
from __future__ import annotations

import csv
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

OUTCOMES = {1: "success", 2: "failure", 3: "timeout"}
#: control steps per robot minute (10 Hz)
STEPS_PER_MINUTE = 600


@dataclass
class EpisodeRecord:
    episode: int
    outcome: str
    steps: int
    episode_return: float
    policy_version: int
    actor_scale: float
    num_updates: int
    robot_min: float = math.nan  #: robot minutes (control steps / 600) at this episode's end, all episodes so far
    intervened_steps: int = 0  #: steps a person (or the simulated operator) commanded

    @property
    def autonomous_success(self) -> bool:
        """Succeeded with no step commanded by a person."""
        return self.outcome == "success" and self.intervened_steps == 0


@dataclass
class Progress:
    window: int = 20
    episodes: list[EpisodeRecord] = field(default_factory=list)
    policy_version: int = 0
    num_updates: int = 0
    actor_scale: float = math.nan
    updates: list[tuple[int, float, float, float]] = field(default_factory=list)  # (updates, scale, actor_loss, critic_loss)
    control_steps: int = 0  #: of all finished episodes

    def on_stats(self, num_updates: int, policy_version: int, actor_scale: float, actor_loss: float,
                 critic_loss: float, critic_scale: float = math.nan) -> None:
        """``actor_scale`` is Mechanic's scale of the trained network: the actor's under DPPO; the selection
        learner trains only its critic, whose scale (``critic_scale``) stands in when the actor's is NaN."""
        scale = actor_scale if math.isfinite(actor_scale) else critic_scale
        self.num_updates, self.policy_version, self.actor_scale = num_updates, policy_version, scale
        self.updates.append((num_updates, scale, actor_loss, critic_loss))

    @property
    def robot_minutes(self) -> float:
        return self.control_steps / STEPS_PER_MINUTE

    def on_episode_end(self, episode: int, event: int, steps: int, episode_return: float,
                       intervened_steps: int = 0) -> str:
        self.control_steps += int(steps)
        rec = EpisodeRecord(episode, OUTCOMES.get(event, str(event)), steps, episode_return,
                            self.policy_version, self.actor_scale, self.num_updates, self.robot_minutes,
                            int(intervened_steps))
        self.episodes.append(rec)
        n = min(len(self.episodes), self.window)
        person = (f" | autonomous {self.success_rate(autonomous=True):.2f}, intervened {rec.intervened_steps} "
                  f"steps ({self.intervention_rate():.2f} of the last {n} episodes' steps)"
                  if any(e.intervened_steps for e in self.episodes) else "")
        return (f"[progress] episode {episode:4d} {rec.outcome:<8s} steps {steps:3d} | {self.robot_minutes:6.2f} "
                f"robot min | success rate {self.success_rate():.2f} (last {n}){person} | "
                f"policy v{self.policy_version} | updates {self.num_updates} | Mechanic scale {self.actor_scale:.3g}")

    def success_rate(self, window: int | None = None, autonomous: bool = False) -> float:
        """Successes among the last ``window`` episodes (``autonomous``: those without an intervention)."""
        last = self.episodes[-(window or self.window):]
        wins = sum(e.autonomous_success if autonomous else e.outcome == "success" for e in last)
        return wins / len(last) if last else 0.0

    def intervention_rate(self, window: int | None = None) -> float:
        """Share of the control steps of the last ``window`` episodes that a person commanded."""
        last = self.episodes[-(window or self.window):]
        steps = sum(e.steps for e in last)
        return sum(e.intervened_steps for e in last) / steps if steps else 0.0

    def write(self, run_dir: Path) -> list[Path]:
        """Write ``episodes.csv`` and ``learning_curve.png``; returns the paths written."""
        run_dir.mkdir(parents=True, exist_ok=True)
        out = []
        path = run_dir / "episodes.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["episode", "outcome", "steps", "return", "policy_version", "actor_scale", "num_updates",
                        "robot_min", "intervened_steps"])
            for e in self.episodes:
                w.writerow([e.episode, e.outcome, e.steps, f"{e.episode_return:.4f}", e.policy_version,
                            f"{e.actor_scale:.6g}", e.num_updates, f"{e.robot_min:.3f}", e.intervened_steps])
        out.append(path)
        if self.episodes:
            out.append(self._plot(run_dir / "learning_curve.png"))
        return out

    def _plot(self, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        eps = [e.robot_min for e in self.episodes]
        wins = [1.0 if e.outcome == "success" else 0.0 for e in self.episodes]
        ends = range(1, len(self.episodes) + 1)
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        ax = axes[0]
        ax.plot(eps, [Progress(self.window, self.episodes[:i]).success_rate() for i in ends],
                label=f"success rate (last {self.window})")
        if any(e.intervened_steps for e in self.episodes):
            ax.plot(eps, [Progress(self.window, self.episodes[:i]).success_rate(autonomous=True) for i in ends],
                    label="autonomous success (no intervention)")
            ax.plot(eps, [Progress(self.window, self.episodes[:i]).intervention_rate() for i in ends],
                    label="intervention rate (share of steps)", color="tab:red")
        ax.scatter(eps, wins, s=6, alpha=0.3, label="episode outcome")
        ax2 = ax.twinx()
        ax2.step(eps, [e.policy_version for e in self.episodes], where="post", color="gray", alpha=0.6)
        ax2.set_ylabel("policy version", color="gray")
        ax.set_xlabel("robot minutes (control steps / 600, at 10 Hz)")
        ax.set_ylabel("success")
        ax.set_ylim(-0.05, 1.05)
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title("online fine-tuning on the simulated FR3")
        ax = axes[1]
        if self.updates:
            u = [x[0] for x in self.updates]
            ax.plot(u, [x[1] for x in self.updates], label="Mechanic scale (trained network)")
            ax.set_yscale("log")
            ax.set_xlabel("learner updates")
            ax.set_ylabel("effective learning-rate scale")
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no learner updates yet", ha="center", va="center", transform=ax.transAxes)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


class MonitorNode:
    """rclpy glue: spins a node on its own thread and feeds :class:`Progress`."""

    def __init__(self, progress: Progress, event_topic: str | None = None, stats_topic: str | None = None):
        import rclpy
        from rclpy.signals import SignalHandlerOptions

        from mechanic_rl_ros.msg import EpisodeEvent
        from mechanic_rl_ros.wire import topics

        self._rclpy = rclpy
        event_topic = event_topic or topics.EPISODE_EVENTS.name
        stats_topic = stats_topic or topics.LEARNER_STATS.name
        self.progress = progress
        self.lines: list[str] = []
        self.ctx = rclpy.Context()
        # args=[]: rclpy would otherwise parse the runner's own command line, whose launch arguments
        # (checkpoint:=DIR) rcl reads as deprecated remap rules and warns about at every start
        rclpy.init(args=[], context=self.ctx, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("finetune_monitor", context=self.ctx)
        ends = {EpisodeEvent.SUCCESS, EpisodeEvent.FAILURE, EpisodeEvent.TIMEOUT}
        self._seen: set[int] = set()

        def on_event(m):
            if m.event in ends and m.episode not in self._seen:
                self._seen.add(m.episode)
                line = progress.on_episode_end(m.episode, m.event, m.steps, m.episode_return, m.intervened_steps)
                print(line, flush=True)

        printed = [-1]  # the offline stage's progress is printed every 100 gradient steps

        def on_stats(m):
            if not self._seen and (printed[0] < 0 or m.num_updates >= printed[0] + 100):
                # learning before any episode ended: the offline stage the first episode waits for
                printed[0] = m.num_updates
                print(f"[progress] before the first episode: the learner's offline stage at {m.num_updates} "
                      f"gradient steps (policy version {m.policy_version})", flush=True)
            progress.on_stats(m.num_updates, m.policy_version, m.actor_scale, m.actor_loss, m.critic_loss,
                              m.critic_scale)

        self.node.create_subscription(topics.EPISODE_EVENTS.type, event_topic, on_event, topics.EPISODE_EVENTS.qos)
        self.node.create_subscription(topics.LEARNER_STATS.type, stats_topic, on_stats, topics.LEARNER_STATS.qos)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while self.ctx.ok():
            try:
                self.executor.spin_once(timeout_sec=0.1)
            except Exception:  # shutting down
                if not self.ctx.ok():
                    return
                raise

    def close(self) -> None:
        self.ctx.shutdown()
        self.thread.join(timeout=2.0)
