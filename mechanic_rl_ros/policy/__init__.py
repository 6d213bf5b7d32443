"""Diffusion visuomotor policy (Chi et al., RSS 2023) with DPPO sampling (Ren et al. 2024), pure torch.

Public API::

    from mechanic_rl_ros.policy import DiffusionPolicy, PolicyConfig
    from mechanic_rl_ros.control.history import ObsHistory
    policy = DiffusionPolicy.from_checkpoint("checkpoints/lift_pretrained")
    hist = ObsHistory.for_policy(policy); hist.push(obs)
    actions = policy.predict_chunk(hist.stacked())          # float32[T_p, 8], real units
    planner = PolicyPlanner(policy)                          # plans chunks for control.chunk_loop
    out = policy.sample(batch_obs, stochastic=True)          # actions, chain, logprobs
    lp = policy.chain_log_prob(batch_obs, out.chain)         # PPO ratios (with grad)

No ROS imports anywhere in this package.
"""
from .checkpoint import (CheckpointMismatchError, check_state_dict, sha256_hex, state_dict_from_bytes,
                         state_dict_to_bytes)
from .config import (DiffusionConfig, PolicyConfig, SamplingConfig, UNetConfig, VisionConfig)
from .diffusion import NoiseSchedule
from .normalizer import MinMaxNormalizer, PolicyNormalizer
from .planner import PolicyPlanner
from .policy import DiffusionPolicy, DiffusionSample, NoiseNet

__all__ = [
    "CheckpointMismatchError", "DiffusionConfig", "DiffusionPolicy", "DiffusionSample", "MinMaxNormalizer",
    "NoiseNet", "NoiseSchedule", "PolicyConfig", "PolicyPlanner", "PolicyNormalizer", "SamplingConfig",
    "UNetConfig", "VisionConfig", "check_state_dict", "sha256_hex", "state_dict_from_bytes",
    "state_dict_to_bytes",
]
