"""Online RL fine-tuning of the diffusion policy (pure torch, no ROS imports).

Public API::

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

__all__ = [
    "ActResult", "Batch", "BufferCounters", "DPPO", "DPPOConfig", "NonFiniteUpdateError", "ObsCritic",
    "RLFileConfig", "RolloutBuffer", "clip_schedule", "denoising_advantages", "denoising_discount", "gae",
    "load_config", "normalize_advantages", "ppo_clip_loss",
]
