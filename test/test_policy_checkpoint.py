"""Checkpoints (safetensors + JSON), architecture ids and weights-as-bytes (real torch, no pickle)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mechanic_rl_ros.control.history import ObsHistory
from mechanic_rl_ros.policy import (CheckpointMismatchError, DiffusionPolicy, PolicyNormalizer,
                                    state_dict_from_bytes, state_dict_to_bytes)
from mechanic_rl_ros.policy.checkpoint import CONFIG_FILE, WEIGHTS_FILE, sha256_hex
from mechanic_rl_ros.policy.dataset import synthetic_episodes
from fixtures_policy import random_obs, tiny_config

torch.set_num_threads(1)


def _trained_like_policy(seed=0, **kw):
    """A tiny policy with a fitted (non-identity) normaliser and random weights."""
    cfg = tiny_config(**kw)
    eps = synthetic_episodes(3, 20, cfg.cameras, cfg.image_size, 13, seed=seed)
    torch.manual_seed(seed)
    return DiffusionPolicy(cfg, PolicyNormalizer.fit(eps, cfg.lowdim_keys)).eval(), eps


def _history(policy, ep):
    h = ObsHistory.for_policy(policy)
    for t in range(3):
        obs = {k: ep[k][t] for k in policy.cfg.lowdim_keys}
        if policy.cfg.cameras:
            obs["images"] = {c: ep["images"][c][t] for c in policy.cfg.cameras}
        h.push(obs)
    return h.stacked()


@pytest.mark.parametrize("state_only", [False, True])
def test_save_load_gives_identical_actions(tmp_path, state_only):
    policy, eps = _trained_like_policy(state_only=state_only)
    policy.train_info = {"note": "test"}
    policy.save(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    loaded = DiffusionPolicy.from_checkpoint(tmp_path / "ckpt", expected_arch_id=policy.arch_id).eval()
    assert loaded.arch_id == policy.arch_id and loaded.train_info == {"note": "test"}
    hist = _history(policy, eps[0])
    a = policy.predict_chunk(hist, seed=3)
    b = loaded.predict_chunk(hist, seed=3)
    assert a.shape == (16, 8) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, loaded.predict_chunk(hist, seed=4))
    assert loaded.predict_action(hist, seed=3).shape == (8, 8)
    np.testing.assert_array_equal(loaded.predict_action(hist, seed=3), b[1:9])
    # stochastic sampling and log-probs agree too
    obs = random_obs(policy.cfg, 2)
    s1 = policy.sample(obs, generator=torch.Generator().manual_seed(0))
    s2 = loaded.sample(obs, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s1.chain, s2.chain) and torch.equal(s1.logprobs, s2.logprobs)
    cfg = json.loads((tmp_path / "ckpt" / CONFIG_FILE).read_text())
    assert cfg["arch_id"] == policy.arch_id
    assert cfg["normalizer"]["action"]["min"] == pytest.approx(policy.normalizer.action.min.tolist())


def test_finetuned_policy_round_trips(tmp_path):
    policy, _ = _trained_like_policy()
    ft = policy.make_finetune_copy(2)
    with torch.no_grad():
        next(ft.parameters()).add_(0.1)
    policy.save(tmp_path / "ft")
    loaded = DiffusionPolicy.from_checkpoint(tmp_path / "ft")
    assert loaded.ft_net is not None and loaded.cfg.sampling.finetune_steps == 2
    obs = random_obs(policy.cfg, 2)
    a = policy.sample(obs, generator=torch.Generator().manual_seed(0))
    b = loaded.sample(obs, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.chain, b.chain)


def test_mismatched_architecture_names_the_tensor(tmp_path):
    small, _ = _trained_like_policy()
    small.save(tmp_path / "small")
    other_cfg = tiny_config()
    other_cfg.unet.down_dims = (16, 32, 64)
    other = DiffusionPolicy(other_cfg)
    assert other.arch_id != small.arch_id
    with pytest.raises(CheckpointMismatchError) as e:
        other.load_checkpoint_weights(tmp_path / "small")
    msg = str(e.value)
    assert f"architecture id: expected {other.arch_id}, got {small.arch_id}" in msg
    assert "tensor 'unet.mid.0.block1.0.weight': expected shape (64, 64, 3), got (32, 32, 3)" in msg

    # a config.json edited to claim another architecture: the shapes no longer fit
    cfg_path = tmp_path / "small" / CONFIG_FILE
    cfg = json.loads(cfg_path.read_text())
    cfg["policy"]["unet"]["down_dims"] = [16, 32, 64]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatchError) as e:
        DiffusionPolicy.from_checkpoint(tmp_path / "small")
    msg = str(e.value)
    assert "architecture ids differ" in msg
    assert "tensor 'net.unet.mid.0.block1.0.weight': expected shape (64, 64, 3), got (32, 32, 3)" in msg

    # the caller expects another architecture id
    small.save(tmp_path / "again")
    with pytest.raises(CheckpointMismatchError, match="expected by caller"):
        DiffusionPolicy.from_checkpoint(tmp_path / "again", expected_arch_id="0123456789abcdef")


def test_corrupted_weights_are_refused(tmp_path):
    policy, _ = _trained_like_policy()
    policy.save(tmp_path / "c")
    w = tmp_path / "c" / WEIGHTS_FILE
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointMismatchError, match="sha256"):
        DiffusionPolicy.from_checkpoint(tmp_path / "c")


def test_finetuned_weights_round_trip_and_checks():
    src, _ = _trained_like_policy(seed=0)
    torch.manual_seed(1)
    dst = DiffusionPolicy(tiny_config(), src.normalizer)  # same normaliser (it travels in config.json)
    dst.load_state_dict(src.state_dict())
    ft = src.make_finetune_copy(3)
    with torch.no_grad():
        next(ft.parameters()).mul_(1.5)
    data = state_dict_to_bytes(ft.state_dict(), {"arch_id": src.arch_id})
    assert data == state_dict_to_bytes(dict(reversed(list(ft.state_dict().items()))), {"arch_id": src.arch_id})
    sd = state_dict_from_bytes(data, sha256_hex(data))
    assert set(sd) == set(ft.state_dict())
    with pytest.raises(CheckpointMismatchError, match="sha256"):
        state_dict_from_bytes(data, "0" * 64)

    with pytest.raises(CheckpointMismatchError, match="without finetune_steps"):
        dst.load_finetuned(sd)                              # no ft_net yet and no K' given
    dst.load_finetuned(sd, finetune_steps=3)
    for k, v in ft.state_dict().items():
        assert torch.equal(dst.ft_net.state_dict()[k], v)
    obs = random_obs(src.cfg, 2)
    a = src.sample(obs, generator=torch.Generator().manual_seed(0))
    b = dst.sample(obs, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.chain, b.chain)

    with pytest.raises(CheckpointMismatchError, match="fine-tuned for the last 4 denoising steps"):
        dst.load_finetuned(sd, finetune_steps=4)
    other_cfg = tiny_config()
    other_cfg.vision.feature_dim = 8
    other = DiffusionPolicy(other_cfg)
    with pytest.raises(CheckpointMismatchError, match=r"tensor 'encoders.scene.out.weight': expected shape \(8, 16\), "
                                                      r"got \(16, 16\)"):
        other.load_finetuned(sd, finetune_steps=3)


def test_no_pickle_in_policy_package():
    root = Path(__file__).resolve().parents[1] / "mechanic_rl_ros" / "policy"
    for f in root.rglob("*.py"):
        src = f.read_text()
        assert "import pickle" not in src and "torch.load(" not in src and "torch.save(" not in src, f
        assert "rclpy" not in src, f


def test_warm_up_changes_no_later_sample():
    """policy_node warms the model up before its first tick: the chunks it then plans are the same."""
    policy, eps = _trained_like_policy(state_only=False)
    hist = _history(policy, eps[0])
    before = policy.predict_chunk(hist, seed=3)
    assert policy.warm_up() > 0.0
    np.testing.assert_array_equal(policy.predict_chunk(hist, seed=3), before)
    assert policy.warm_up(proposals=4) > 0.0
    np.testing.assert_array_equal(policy.predict_chunk(hist, seed=3), before)
