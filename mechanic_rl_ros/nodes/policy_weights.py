"""policy_node's intake of PolicyWeights: which messages are new, their verification, and the swap between
chunks, with how long each step took. No rclpy: it works on the message object, a clock and a logger, so
it is used (and can be tested) without a running node."""
from __future__ import annotations

from typing import Callable

from mechanic_rl_ros.wire import WireError
from mechanic_rl_ros.wire.weights import verify_weights


def seconds(stamp) -> float:
    """A builtin_interfaces/Time as seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


class WeightsIntake:
    """Verified PolicyWeights staged into ``planner`` (a PolicyPlanner; set before the first message).

    ``policy``: the DiffusionPolicy the weights are for (its fine-tuned network, once it has one, fixes the
    denoising steps they cover); ``selector``: the critic selector when the weights are a critic;
    ``architecture_id`` and ``expected_shapes``: what the weights must match. ``now()``: the node's clock [s];
    ``logger``: rclpy's (``info``, ``debug``); ``problem(key, text)`` reports a refusal.
    """

    def __init__(self, policy, selector, architecture_id: str, expected_shapes: dict, now: Callable[[], float],
                 logger, problem: Callable[[str, str], None]):
        self.policy, self.selector, self.planner = policy, selector, None
        self.architecture_id, self.expected_shapes = architecture_id, expected_shapes
        self.now, self.logger, self.problem = now, logger, problem
        #: weights version -> (publish stamp, sha256) of verified weights waiting for the next chunk
        self.staged: dict[int, tuple[float, str]] = {}
        self.running_sha256: str | None = None  # of the adopted weights; None while running the checkpoint's own
        #: publish stamp -> verified / -> swapped in, of the last adopted weights [ms, node clock]
        self.timing: dict[str, float] = {"verified_ms": float("nan"), "swapped_ms": float("nan")}
        self.counts = {"weights_adopted": 0, "weights_rejected": 0}

    def on_message(self, msg) -> None:
        """A PolicyWeights message: staged for the next chunk if newer and valid, else refused with the reason."""
        version = self.planner.version
        try:
            if msg.version == version and self.running_sha256 in (None, msg.sha256):
                # a fresh learner's version 0 (= this checkpoint) or a restarted one re-announcing its latest
                self.logger.debug(f"weights version {msg.version} already running; nothing to do")
                return
            if msg.version <= version:
                raise WireError("version", f"got {msg.version} (sha256 {msg.sha256[:12]}); expected a version newer "
                                           f"than the one running, {version} (sha256 "
                                           f"{(self.running_sha256 or 'of the checkpoint')[:12]})")
            has_ft = self.policy.ft_net is not None or self.selector is not None
            weights = verify_weights(msg, architecture_id=self.architecture_id, expected_shapes=self.expected_shapes,
                                     finetune_steps=self.policy.cfg.sampling.finetune_steps
                                     if self.policy.ft_net is not None else None)
            if not has_ft and weights.finetune_steps is None:
                raise WireError("payload", "no finetune_steps in the metadata: for how many of the last denoising "
                                           "steps are these weights? (this policy has no fine-tuned network yet)")
        except WireError as exc:
            self.counts["weights_rejected"] += 1
            self.problem("weights", f"weights version {msg.version} refused, keeping version {version}: {exc}")
            return
        sent = seconds(msg.header.stamp)
        self.timing["verified_ms"] = (self.now() - sent) * 1e3
        self.staged[weights.version] = (sent, weights.sha256)
        self.planner.stage_weights(weights.tensors, weights.version, weights.finetune_steps)
        self.logger.info(f"weights version {msg.version} verified; swapping in at the next chunk")

    def on_swap(self, version: int, error: Exception | None) -> None:
        """Called by the planner between chunks, after it tried to swap in staged weights."""
        sent, sha256 = self.staged.pop(version, (float("nan"), None))
        if error is not None:
            self.counts["weights_rejected"] += 1
            self.problem("weights", f"weights version {version} failed to load, keeping {self.planner.version}: "
                                    f"{error}")
            return
        self.running_sha256 = sha256
        self.timing["swapped_ms"] = (self.now() - sent) * 1e3
        self.counts["weights_adopted"] += 1
        self.logger.info(f"now running policy version {version}")
