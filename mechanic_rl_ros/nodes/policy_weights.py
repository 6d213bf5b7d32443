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


def weights_contract(policy, algorithm: str, select_config: str, distill_config: str) -> tuple:
    """(critic selector or None, tensor name -> shape, architecture id) of the ``PolicyWeights`` a policy node
    running ``algorithm`` accepts: ``select``, the critic (nothing of the diffusion policy); ``distill``, the
    trained layers of this very policy (``distill_config``'s ``train_params``); ``dppo``, the whole fine-tuned
    network, which has the shapes of the pretrained one it was copied from."""
    from mechanic_rl_ros.rl.distill import distilled_layers, load_distill_config
    from mechanic_rl_ros.rl.selection import CriticSelector, load_select_config

    if algorithm == "select":
        pc = policy.cfg
        selector = CriticSelector(load_select_config(select_config, feat_dim=policy.net.cond_dim,
                                                     act_dim=pc.action_horizon * pc.action_dim), policy.arch_id)
        return selector, selector.expected_shapes, selector.arch_id
    if algorithm == "distill":
        return None, *distilled_layers(policy, load_distill_config(distill_config).train_params)
    return None, {k: tuple(v.shape) for k, v in policy.net.state_dict().items()}, policy.arch_id


class WeightsIntake:
    """Verified PolicyWeights staged into ``planner`` (a PolicyPlanner; set before the first message).

    ``policy``: the DiffusionPolicy the weights are for (its fine-tuned network, once it has one, fixes the
    denoising steps they cover); ``selector``: the critic selector when the weights are a critic;
    ``architecture_id`` and ``expected_shapes``: what the weights must match. ``now()``: the node's clock [s];
    ``logger``: rclpy's (``info``, ``debug``); ``problem(key, text)`` reports a refusal. ``partial``: the weights
    are a part of the policy network itself (the distillation learner's trained layers), not a fine-tuned copy.
    """

    def __init__(self, policy, selector, architecture_id: str, expected_shapes: dict, now: Callable[[], float],
                 logger, problem: Callable[[str, str], None], partial: bool = False):
        self.policy, self.selector, self.planner, self.partial = policy, selector, None, bool(partial)
        self.architecture_id, self.expected_shapes = architecture_id, expected_shapes
        self.now, self.logger, self.problem = now, logger, problem
        #: weights version -> (publish stamp, sha256) of verified weights waiting for the next chunk
        self.staged: dict[int, tuple[float, str]] = {}
        self.running_sha256: str | None = None  # of the adopted weights; None while running the checkpoint's own
        #: publish stamp -> verified / -> swapped in, of the last adopted weights [ms, node clock]
        #: and how long the swap itself took, on the planning thread between two chunks [ms] (distilled layers:
        #: the exchange of the active and the standby network; the copy into the standby is made when staged)
        self.timing: dict[str, float] = {"verified_ms": float("nan"), "swapped_ms": float("nan"),
                                         "swap_ms": float("nan")}
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
            has_ft = self.policy.ft_net is not None or self.selector is not None or self.partial
            weights = verify_weights(msg, architecture_id=self.architecture_id, expected_shapes=self.expected_shapes,
                                     finetune_steps=self.policy.cfg.sampling.finetune_steps
                                     if self.policy.ft_net is not None else 0 if self.partial else None)
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
        # distilled layers (partial): the planner checks them and copies them into the policy's standby network
        # here, on the weights thread (or on its process's), so that the swap between two chunks only exchanges
        # the active and the standby network
        if self.planner.stage_weights(weights.tensors, weights.version, weights.finetune_steps):
            self.logger.info(f"weights version {msg.version} verified; swapping in at the next chunk")

    def accepted(self, version: int) -> bool:
        """Whether weights ``version`` (or newer) are running or verified and waiting for the next chunk."""
        return self.planner.version >= version or any(v >= version for v in list(self.staged))

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
        self.timing["swap_ms"] = getattr(self.planner, "swap_seconds", float("nan")) * 1e3
        self.counts["weights_adopted"] += 1
        self.logger.info(f"now running policy version {version}")
