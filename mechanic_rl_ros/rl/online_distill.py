"""Distillation into the policy as a :class:`~mechanic_rl_ros.rl.learner.Learner` (``algorithm:=distill``).

Each decision (the first step of its chunk: the observation history and the predicted chunk, the last
element of its deterministic chain) is held with its episode until the episode's outcome is known.
The chunks of a successful episode are kept in the :class:`~mechanic_rl_ros.rl.distill.ChunkReplay`;
those of a failed, timed-out or aborted one are dropped. The :class:`~mechanic_rl_ros.rl.distill.Distiller`
owes

    owed = offline_steps + floor(utd * decisions kept) - gradient steps made,

so ``offline_steps`` on the demonstrations alone come before anything online, then ``utd`` steps per
kept decision on batches half demonstrations, half kept chunks. With ``objective: align`` (an offline
stage that teaches the camera encoder a changed picture, :meth:`~mechanic_rl_ros.rl.distill.Distiller.align_loss`)
only the ``offline_steps`` are owed: kept chunks have no recorded picture to be aligned to.

Steps a person commanded (interventions, HIL-SERL: Luo et al. 2024) are demonstrations: each comes with
the observation history it was commanded from, and its row imitates the commands sent from there, window
for window as :func:`~mechanic_rl_ros.policy.dataset.demo_windows` cuts a recorded demonstration (actions
t-T_o+1 .. t-T_o+T_p, the last commanded step of the intervention repeated past its end). They are kept
whatever the episode's outcome (the person's command is the label), or with ``successful_corrections_only``
only when the episode then succeeded (a correction that ran out of time taught its slowness). Of an episode
a person took over in, only the policy's chunks after the last intervention are kept, and only if it
succeeded: the chunks before it led astray. (The corrections of an episode still running when the learner
is saved are not part of the save: an episode a restart cuts loses them.) The payload is the trained part of the
policy network (``train_params``), which policy_node swaps in between chunks; ``<dir>/policy`` of a
saved learner is an ordinary policy checkpoint (``mechanic-rl eval --checkpoint``).
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .distill import FORMAT, ChunkReplay, DistillConfig, Distiller, decision_row, load_distill_config
from .learner import STATE_FILE, Learner, Payload, Report, StepResult
from .persist import read_learner, save_learner

#: episodes whose outcome is remembered for decisions that arrive after it (topics are not ordered)
ENDED_MEMORY = 256


def load_demos(policy: Any, path: str | Path | None, successful_only: bool = False) -> Any:
    """The :class:`SequenceDataset` of the demonstrations under ``path`` (MCAP bags or their cache; with
    ``successful_only``, those that record a success), None for an empty path; ValueError naming the parameter
    when the path holds none."""
    if not path:
        return None
    from mechanic_rl_ros.data.demos import load_episodes
    from mechanic_rl_ros.policy.dataset import demo_windows

    p = Path(path)
    if not p.exists():
        raise ValueError(f"parameter demos: {p} does not exist; expected a directory of demonstration bags "
                         "(mechanic-rl collect --out, or ros2 bag record of the stack's topics)")
    episodes = load_episodes(p, cameras=policy.cfg.cameras, only_successful=successful_only)
    if not episodes:
        raise ValueError(f"parameter demos: no {'successful ' if successful_only else ''}demonstration under {p}")
    return demo_windows(policy, episodes)


class OnlineDistill(Learner):
    """See the module docstring. ``demos_path`` is remembered with the learner so that a resumed one
    reads the same demonstrations."""

    algorithm = "distill"
    learns_from_interventions = True

    def __init__(self, policy: Any, cfg: DistillConfig, demos_path: str | None = None, publish_every: int = 100,
                 checkpoint_every: int = 500, demos: Any = None):
        super().__init__()
        self.demos_path = str(demos_path or "")
        if demos is None:
            demos = load_demos(policy, self.demos_path, cfg.successful_demos_only)
        self.distiller = Distiller(policy, cfg, demos)
        self.publish_every, self.checkpoint_every = int(publish_every), int(checkpoint_every)
        #: episode -> {chunk: (images, lowdim, action)} of decisions waiting for the episode's outcome
        self.pending: dict[int, dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self.ended: OrderedDict[int, bool] = OrderedDict()
        #: episode -> {step: (command sent [8], by a person)} of the episodes the memory holds
        self.sent: dict[int, dict[int, tuple[np.ndarray, bool]]] = {}
        #: episode -> {step: (chunk, images, lowdim)} of intervened steps waiting for the episode's end
        self.corrections: dict[int, dict[int, tuple[int, np.ndarray, np.ndarray]]] = {}
        self.counts.update({"decisions_kept": 0, "decisions_dropped_failed": 0, "episodes_kept": 0,
                            "episodes_failed": 0, "weights_published_version": 0, "corrections_kept": 0,
                            "corrections_incomplete": 0, "corrections_dropped_failed": 0,
                            "decisions_dropped_before_correction": 0})

    @property
    def cfg(self) -> DistillConfig:
        return self.distiller.cfg

    @property
    def policy(self) -> Any:
        return self.distiller.policy

    # ------------------------------------------------------------ input
    def _decision(self, episode: int, chunk: int, decision: Any) -> None:
        chain = np.asarray(decision.chain)
        if chain.ndim != 3 or not len(chain):
            raise ValueError(f"decision chain: shape {list(chain.shape)}; expected [K'+1, T_p, A]")
        import torch

        action = self.policy.normalizer.action.unnormalize(torch.from_numpy(chain[-1].astype(np.float32))).numpy()
        row = decision_row(self.policy.cfg, decision.obs, action)
        if episode in self.ended:  # the outcome came first (another topic)
            self._keep(episode, {chunk: row}) if self.ended[episode] else self._count_failed(1)
            return
        self.pending.setdefault(episode, {})[chunk] = row

    def _action(self, episode: int, step: int, action: Any, intervention: bool) -> None:
        self.sent.setdefault(episode, {})[step] = (np.asarray(action, np.float32), bool(intervention))

    def _correction(self, episode: int, step: int, chunk: int, decision: Any) -> None:
        cfg = self.policy.cfg
        images, lowdim, _ = decision_row(cfg, decision.obs, np.zeros((cfg.pred_horizon, cfg.action_dim)))
        if episode in self.ended:  # the outcome came first (another topic): the commands so far are all there is
            if self._keeps_corrections(self.ended[episode]):
                self._keep_correction(episode, step, chunk, images, lowdim)
            else:
                self.counts["corrections_dropped_failed"] += 1
        else:
            self.corrections.setdefault(episode, {})[step] = (chunk, images, lowdim)

    def _keeps_corrections(self, success: bool) -> bool:
        """Whether the corrections of an episode with this outcome are kept (``successful_corrections_only``)."""
        return success or not self.cfg.successful_corrections_only

    def _keep_correction(self, episode: int, step: int, chunk: int, images: np.ndarray, lowdim: np.ndarray) -> None:
        """The demonstration row of the intervened ``step``: its window of sent commands (module docstring)."""
        cfg, sent = self.policy.cfg, self.sent.get(episode, {})
        end = step
        while sent.get(end + 1, (None, False))[1]:
            end += 1
        steps = np.clip(step - cfg.obs_horizon + 1 + np.arange(cfg.pred_horizon), 0, end)
        if any(int(t) not in sent for t in steps):
            self.counts["corrections_incomplete"] += 1
            return
        action = np.stack([sent[int(t)][0] for t in steps])
        if self.distiller.replay.add(episode, chunk, images, lowdim, action):
            self.counts["corrections_kept"] += 1

    def _credit(self, episode: int, chunk: int, reward: float, terminated: bool, truncated: bool) -> bool:
        return True  # the outcome decides, not the step rewards

    def _drop(self, episode: int) -> int:
        self._remember(episode, False)
        self.corrections.pop(episode, None)
        return len(self.pending.pop(episode, {}))

    def end_episode(self, episode: int, success: bool) -> None:
        """The outcome of ``episode``: its held decisions are kept (success) or dropped."""
        super().end_episode(episode, success)
        with self.lock:
            if episode in self.aborted:
                return
            self._remember(int(episode), bool(success))
            rows = self.pending.pop(int(episode), {})
            corrections = self.corrections.pop(int(episode), {})
            if self._keeps_corrections(success):
                for step, (chunk, images, lowdim) in sorted(corrections.items()):
                    self._keep_correction(int(episode), step, chunk, images, lowdim)
            else:
                self.counts["corrections_dropped_failed"] += len(corrections)
            if corrections:  # the policy's chunks before the last intervention led astray
                last = max(chunk for chunk, _, _ in corrections.values())
                before = [c for c in rows if c < last]
                self.counts["decisions_dropped_before_correction"] += len(before)
                rows = {c: r for c, r in rows.items() if c > last}
            if success:
                self.counts["episodes_kept"] += 1
                self._keep(int(episode), rows)
            else:
                self.counts["episodes_failed"] += 1
                self._count_failed(len(rows))

    def _remember(self, episode: int, success: bool) -> None:
        self.ended[episode] = success
        while len(self.ended) > ENDED_MEMORY:
            forgotten, _ = self.ended.popitem(last=False)
            self.sent.pop(forgotten, None)

    def _keep(self, episode: int, rows: Mapping[int, tuple]) -> None:
        for chunk, (images, lowdim, action) in sorted(rows.items()):
            if self.distiller.replay.add(episode, chunk, images, lowdim, action):
                self.counts["decisions_kept"] += 1

    def _count_failed(self, n: int) -> None:
        self.counts["decisions_dropped_failed"] += n

    # ------------------------------------------------------------ learning
    @property
    def steps(self) -> int:
        return self.counts["grad_steps_done"]

    @property
    def trained(self) -> bool:
        return self.distiller.steps > 0

    @property
    def offline_steps(self) -> int:
        """``offline_steps`` of the configuration with demonstrations; 0 without (nothing to learn from)."""
        return self.cfg.offline_steps if self.distiller.demos is not None else 0

    def owed(self) -> int:
        with self.lock:
            kept = self.counts["decisions_kept"] + self.counts["corrections_kept"]
            due = self.cfg.offline_steps + (0 if self.cfg.objective == "align" else int(self.cfg.utd * kept))
            if self.distiller.demos is None and kept == 0:
                due = 0
            return max(0, due - self.steps)

    def step(self) -> StepResult:
        """One gradient step of the trained part of the policy."""
        with self.lock:  # the replay is written by ingestion: the batch is drawn under the lock, not the step
            batch = self.distiller.batch()
        stats = self.distiller.step(batch)
        with self.lock:
            self.counts["grad_steps_done"] += 1
        if stats.get("skipped"):
            return StepResult(stats, "gradient step refused: non-finite loss or gradient; weights unchanged",
                              failed=True)
        return StepResult(stats, samples=float(self.cfg.batch_size))

    # ------------------------------------------------------------ output
    def payload(self) -> Payload:
        c = self.counts
        with self.lock:
            version = max(c["weights_published_version"] + 1, c["policy_version_seen"] + 1)
            c["weights_published_version"] = version
            tensors = self.distiller.tensors()
        return Payload(tensors, version, self.distiller.arch_id, 0, self.distiller.steps)

    def report(self) -> Report:
        d = self.distiller
        version = self.counts["weights_published_version"]
        values = {**self.counts, **{f"kept_{k}": v for k, v in d.replay.counters().items()},
                  "pending_episodes": len(self.pending), "policy_version": version,
                  "num_updates": d.steps, "nonfinite_skipped": d.nonfinite_skipped,
                  "demo_windows": 0 if d.demos is None else len(d.demos), "mechanic_scale": d.scale}
        return Report(version, d.steps, len(d.replay), 0, self.counts["rewards_unmatched"],
                      "distillation into the policy + Mechanic", d.arch_id,
                      f"policy version {version}, {d.steps} gradient steps, {len(d.replay)} chunks kept", values)

    def summary(self, stats: Mapping[str, float]) -> str:
        nan = float("nan")
        return (f"{self.steps} gradient steps on {len(self.distiller.replay)} kept chunks: loss "
                f"{stats.get('actor_loss', nan):.4f}, Mechanic scale {stats.get('actor_scale', nan):.3g}; "
                f"policy version {self.counts['weights_published_version']}")

    def ready_line(self) -> str:
        c, d = self.cfg, self.distiller
        n = sum(int(np.prod(s)) for s in d.shapes.values())
        demos = f"{len(d.demos)} demonstration windows ({self.demos_path})" if d.demos is not None else "no demonstrations"
        aug = (f"images jittered (colour {c.augment_color}, warp {c.augment_warp}, share {c.augment_share})"
               if d.augment.active else "no colour or warp augmentation")
        if c.objective == "align":
            return (f"encoder alignment: {n} parameters under {list(c.train_params)} pulled to the starting "
                    f"encoder's features, {demos}, {aug}, {c.offline_steps} offline steps, optimizer={c.optimizer}, "
                    f"{d.steps} gradient steps so far")
        weights = (f"a moving average of the trained weights published (decay up to {c.ema_decay})" if c.ema_decay
                   else "the last gradient step's weights published")
        return (f"distillation into the policy: {n} parameters under {list(c.train_params)} ({4 * n / 1e6:.1f} MB "
                f"on the wire), {demos}, demo fraction {c.demo_fraction}, UTD {c.utd}, offline steps "
                f"{c.offline_steps}, {aug}, optimizer={c.optimizer}, {weights}, {d.steps} gradient steps so far")

    # ------------------------------------------------------------ persistence
    def _save_parts(self, directory: Path) -> dict[str, Any]:
        self.distiller.deployed_policy().save(directory / "policy")
        save_learner(directory / "distiller", self.distiller.state_dict(), FORMAT, self.cfg.to_dict())
        self.distiller.replay.save(directory / "kept.npz")
        pending = ChunkReplay.for_policy(self.policy.cfg, max(1, sum(len(r) for r in self.pending.values())))
        for ep, rows in self.pending.items():
            for chunk, row in rows.items():
                pending.add(ep, chunk, *row)
        pending.save(directory / "pending.npz")
        return {"demos": self.demos_path, "sampler": self.distiller.rng.bit_generator.state,
                "ended": [[int(e), bool(s)] for e, s in self.ended.items()],
                "publish_every": self.publish_every, "checkpoint_every": self.checkpoint_every}

    @classmethod
    def load(cls, directory: str | Path, params: Mapping[str, Any] | None = None) -> "OnlineDistill":
        """The learner :meth:`save` wrote: its policy, optimiser, kept and pending chunks; the demonstrations
        are read again from where they were (``params["demos"]`` when given)."""
        from mechanic_rl_ros.policy import DiffusionPolicy

        d = Path(directory)
        state = json.loads((d / STATE_FILE).read_text())
        cfg_dict, opt_state = read_learner(d / "distiller", FORMAT, "cpu")
        policy = DiffusionPolicy.from_checkpoint(d / "policy").eval()
        p = dict(params or {})
        self = cls(policy, DistillConfig(**cfg_dict), p.get("demos") or state.get("demos"),
                   int(p.get("weights_publish_every", state.get("publish_every", 100))),
                   int(p.get("weights_checkpoint_every", state.get("checkpoint_every", 500))))
        self.distiller.load_state_dict(opt_state)
        self.distiller.replay = ChunkReplay.load(d / "kept.npz")
        pending = ChunkReplay.load(d / "pending.npz")
        for i in range(len(pending)):
            rows = pending.rows(np.array([i]))
            self.pending.setdefault(int(pending.episode[i]), {})[int(pending.chunk[i])] = (
                rows["images"][0], rows["lowdim"][0], rows["action"][0])
        self.distiller.rng.bit_generator.state = state["sampler"]
        self.ended = OrderedDict((int(e), bool(s)) for e, s in state.get("ended", []))
        self._load_common(state)
        return self

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "OnlineDistill":
        """Fresh from the policy ``checkpoint``, ``distill_config`` (config/distill.yaml) with ``seed`` and
        ``optimizer`` on top, and the ``demos``."""
        from mechanic_rl_ros.policy import DiffusionPolicy

        from mechanic_rl_ros.policy.dataset import pretraining_augment_pad

        ckpt = Path(params["checkpoint"])
        policy = DiffusionPolicy.from_checkpoint(ckpt).eval()
        cfg = load_distill_config(params.get("distill_config"), **dict(params.get("overrides") or {}),
                                  **{k: params[k] for k in ("seed", "optimizer") if params.get(k) is not None})
        if cfg.augment_pad < 0:  # resolved once, and saved with the learner
            cfg.augment_pad = pretraining_augment_pad(ckpt)
        return cls(policy, cfg, params.get("demos"), int(params.get("weights_publish_every", 100)),
                   int(params.get("weights_checkpoint_every", 500)))
