"""Normalisation, observation history, training windows and configuration (real numpy / torch)."""
import numpy as np
import pytest
import torch

from mechanic_rl_ros.control.history import ObsHistory, stack_histories
from mechanic_rl_ros.policy import MinMaxNormalizer, PolicyConfig, PolicyNormalizer
from mechanic_rl_ros.config_files import apply_overrides, load_yaml
from mechanic_rl_ros.policy.config import DEFAULT_CONFIG_PATH
from mechanic_rl_ros.policy.dataset import SequenceDataset, synthetic_episodes
from fixtures_policy import tiny_config


def test_normalisation_round_trips_numpy_and_torch():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(500, 8)) * [1, 2, 3, 4, 5, 6, 7, 0.01] + np.arange(8)
    data[:, 3] = 0.7  # a constant dimension
    n = MinMaxNormalizer.fit(data)
    y = n.normalize(data)
    assert y[:, [0, 1, 2, 4, 5, 6, 7]].min(axis=0) == pytest.approx(-1) and y.max() == pytest.approx(1)
    assert np.allclose(y[:, 3], 0)
    np.testing.assert_allclose(n.unnormalize(y), data, atol=1e-9)
    t = torch.tensor(data, dtype=torch.float32)
    torch.testing.assert_close(n.unnormalize(n.normalize(t)), t, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(n.normalize(t), torch.tensor(y, dtype=torch.float32), atol=1e-4, rtol=1e-4)
    n2 = MinMaxNormalizer.from_dict(n.to_dict())
    np.testing.assert_array_equal(n2.normalize(data), y)
    x32 = data.astype(np.float32)
    assert n.normalize(x32).dtype == np.float32


def test_policy_normaliser_fits_every_key():
    eps = synthetic_episodes(4, 30, cameras=(), seed=1)
    pn = PolicyNormalizer.fit(eps, ("qpos", "gripper", "task_state"))
    all_act = np.concatenate([e["action"] for e in eps])
    np.testing.assert_allclose(pn.action.min, all_act.min(0))
    back = PolicyNormalizer.from_dict(pn.to_dict())
    assert set(back.lowdim) == {"qpos", "gripper", "task_state"}
    np.testing.assert_allclose(back.lowdim["task_state"].max, pn.lowdim["task_state"].max)


def test_obs_history_pads_with_the_first_observation():
    h = ObsHistory(3, cameras=("scene",), lowdim_keys=("qpos", "gripper"))
    with pytest.raises(RuntimeError):
        h.stacked()

    def obs(i):
        return {"qpos": np.full(7, i, np.float32), "gripper": np.array([i], np.float32), "qvel": np.zeros(7),
                "images": {"scene": np.full((4, 4, 3), i, np.uint8), "wrist": np.zeros((4, 4, 3), np.uint8)}}
    h.push(obs(1))
    s = h.stacked()
    assert s["qpos"].shape == (3, 7) and s["images"]["scene"].shape == (3, 4, 4, 3)
    assert s["qpos"][:, 0].tolist() == [1, 1, 1] and "qvel" not in s and set(s["images"]) == {"scene"}
    h.push(obs(2))
    h.push(obs(3))
    h.push(obs(4))
    s = h.stacked()
    assert s["qpos"][:, 0].tolist() == [2, 3, 4] and s["images"]["scene"][:, 0, 0, 0].tolist() == [2, 3, 4]
    b = stack_histories([s, s])
    assert b["gripper"].shape == (2, 3, 1) and b["images"]["scene"].shape == (2, 3, 4, 4, 3)
    h.reset()
    h.push(obs(9))
    assert h.stacked()["gripper"][:, 0].tolist() == [9, 9, 9]


def test_training_windows_pad_at_both_ends():
    cfg = tiny_config(image_size=16)
    eps = synthetic_episodes(2, 20, ("scene",), 16, seed=0)
    for e in eps:  # make indices visible in the data
        e["qpos"][:, 0] = np.arange(20)
        e["action"][:, 0] = np.arange(20)
    ds = SequenceDataset(eps, cfg)
    assert len(ds) == 40
    b = ds.get_batch(np.array([0, 5, 19, 20]))
    assert b["images"]["scene"].shape == (4, 2, 16, 16, 3) and b["images"]["scene"].dtype == torch.uint8
    assert b["qpos"][:, :, 0].tolist() == [[0, 0], [4, 5], [18, 19], [0, 0]]
    assert b["action"].shape == (4, 16, 8)
    assert b["action"][0, :, 0].tolist() == [0] + list(range(15))  # a_{-1} repeats a_0
    assert b["action"][1, :, 0].tolist() == list(range(4, 20))
    assert b["action"][2, :, 0].tolist() == [18, 19] + [19] * 14
    n = sum(len(x["action"]) for x in ds.batches(16, np.random.default_rng(0), drop_last=True))
    assert n == 32


def test_yaml_defaults_equal_dataclass_defaults_and_overrides():
    y = load_yaml(DEFAULT_CONFIG_PATH)
    assert PolicyConfig.from_dict(y["policy"]).to_dict() == PolicyConfig().to_dict()
    from mechanic_rl_ros.jobs.pretrain import TRAIN_DEFAULTS

    assert y["train"] == TRAIN_DEFAULTS
    o = apply_overrides(y, ["policy.unet.down_dims=[32,64]", "train.lr=1e-3", "policy.cameras=[]"])
    assert o["policy"]["unet"]["down_dims"] == [32, 64] and o["train"]["lr"] == 1e-3 and o["policy"]["cameras"] == []
    with pytest.raises(ValueError, match="unknown"):
        PolicyConfig.from_dict({"unet": {"widths": [1]}})


def test_a_settings_file_that_is_not_a_mapping_of_yaml_is_refused_naming_it(tmp_path):
    cases = {"latin1.yaml": ("cube_mass: 0.2 # \xe9\n".encode("latin-1"), r"cannot be read \(UnicodeDecodeError"),
             "bad.yaml": (b"cube_mass: [0.2\n", r"not valid YAML \(ParserError: .*line 1"),
             "list.yaml": (b"- cube_mass\n", r"a list at the top level; expected a mapping of keys to values")}
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=f"my settings '.*{name}': {message}"):
            load_yaml(tmp_path / name, "my settings")
    with pytest.raises(ValueError, match=r"'.*missing.yaml': cannot be read \(FileNotFoundError: No such file"):
        load_yaml(tmp_path / "missing.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(tmp_path / "empty.yaml") == {}


def test_arch_id_tracks_architecture_only():
    a = PolicyConfig()
    b = PolicyConfig()
    b.sampling.inference_steps = 5
    b.action_horizon = 4
    assert a.arch_id == b.arch_id and len(a.arch_id) == 16
    c = PolicyConfig()
    c.vision.base_width = 32
    d = PolicyConfig(obs_horizon=3)
    assert len({a.arch_id, c.arch_id, d.arch_id}) == 3
    with pytest.raises(ValueError, match="T_o - 1 \\+ T_a"):
        PolicyConfig(action_horizon=16).validate()
