"""Online RL fine-tuning of the diffusion policy (pure torch, no ROS imports).

Public API::

    from mechanic_rl_ros.rl import DPPO, DPPOConfig, RolloutBuffer, load_config
    learner = DPPO.from_checkpoint("checkpoints/lift_pretrained", load_config().learner)
    buf = RolloutBuffer(action_horizon=learner.policy.cfg.action_horizon)
    buf.add_decision(obs_history, chain, chain_logprob, policy_version, episode, chunk)
    buf.add_step_reward(episode, chunk, reward, terminated=..., truncated=...)
    if buf.ready(n):
        stats = learner.update(buf.take_batch(n))
        weights = learner.policy_weights()       # bytes + sha256 + version + arch id
    learner.save("runs/x/ckpt"); learner = DPPO.load("runs/x/ckpt")

See docs/rl.md.
"""
from .algorithm import NonFiniteUpdateError, PolicyWeights, RLAlgorithm
from .buffer import Batch, BufferCounters, RolloutBuffer, flatten_obs, unflatten_obs
from .config import DPPOConfig, RLFileConfig, load_config
from .dppo import DPPO, ActResult, ObsCritic
from .gae import clip_schedule, denoising_advantages, denoising_discount, gae, normalize_advantages, ppo_clip_loss

__all__ = [
    "ActResult", "Batch", "BufferCounters", "DPPO", "DPPOConfig", "NonFiniteUpdateError", "ObsCritic",
    "PolicyWeights", "RLAlgorithm", "RLFileConfig", "RolloutBuffer", "clip_schedule", "denoising_advantages", "denoising_discount",
    "flatten_obs", "gae", "load_config", "normalize_advantages", "ppo_clip_loss", "unflatten_obs",
]
