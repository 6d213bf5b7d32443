"""Online RL fine-tuning of the diffusion policy (pure torch, no ROS imports).

Every algorithm is a :class:`~.learner.Learner` (rl/learner.py): learner_node and the headless trainers
drive it with the same calls::

    from mechanic_rl_ros.rl import open_learner
    learner, resumed = open_learner(params, "runs/x/learner")   # params: learner_node's ("algorithm", ...)
    learner.add_step(episode, step, chunk, policy_version, first, decision)
    learner.add_reward(episode, step, reward, terminated, truncated)
    learner.abort_episode(episode)
    while learner.owed() > 0:
        learner.step()
    payload = learner.payload()                     # what goes on the wire as PolicyWeights
    learner.save("runs/x/learner")

``select`` (:mod:`.online_selection`, the stack's default): value-guided selection among the frozen
policy's proposals (:mod:`.selection`, critic ensemble :class:`~.critic.QEnsemble`, replay
:mod:`.replay`). ``dppo`` (:mod:`.online_dppo`): DPPO on the denoiser; its parts, as ``train-rl`` uses
them::

    from mechanic_rl_ros.rl import DPPO, DPPOConfig, RolloutBuffer, load_config
    learner = DPPO.from_checkpoint("checkpoints/lift_pretrained", load_config().learner)
    buf = RolloutBuffer(action_horizon=learner.policy.cfg.action_horizon)
    buf.add_decision(decision)                      # a control.decision.Decision
    buf.add_step_reward(episode, chunk, reward, terminated=..., truncated=...)
    if buf.ready(n):
        stats = learner.update(buf.take_batch(n))   # learner.policy.ft_net holds the new weights
    learner.save("runs/x/ckpt"); learner = DPPO.load("runs/x/ckpt")

See docs/learner.md.
"""
from .buffer import Batch, BufferCounters, RolloutBuffer
from .config import DPPOConfig, RLFileConfig, load_config
from .critic import ObsCritic
from .dppo import DPPO, ActResult
from .errors import NonFiniteUpdateError
from .gae import clip_schedule, denoising_advantages, denoising_discount, gae, normalize_advantages, ppo_clip_loss
from .learner import ALGORITHMS, Learner, learner_class, open_learner

__all__ = [
    "ALGORITHMS", "ActResult", "Batch", "BufferCounters", "DPPO", "DPPOConfig", "NonFiniteUpdateError", "ObsCritic",
    "RLFileConfig", "RolloutBuffer", "clip_schedule", "denoising_advantages", "denoising_discount", "gae",
    "Learner", "learner_class", "load_config", "open_learner", "normalize_advantages", "ppo_clip_loss",
]
