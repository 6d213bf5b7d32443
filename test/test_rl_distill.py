"""The distillation learner (algorithm distill) with a tiny real policy: what it keeps, what it trains, that
it is deterministic on fixed data, that it resumes, that its saved policy is an ordinary checkpoint, and the
policy side of its weights (refused when of another architecture or corrupt; the last good ones kept)."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rosenv import REPO
from stack_fixtures import make_checkpoint

from mechanic_rl_ros.control.decision import Decision
from mechanic_rl_ros.policy import DiffusionPolicy, PolicyPlanner
from mechanic_rl_ros.policy.checkpoint import CheckpointMismatchError
from mechanic_rl_ros.policy.dataset import SequenceDataset, synthetic_episodes
from mechanic_rl_ros.rl.distill import DistillConfig, distill_arch_id, load_distill_config, trained_names
from mechanic_rl_ros.rl.online_distill import OnlineDistill

SIZE = 32


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("distill") / "ckpt"
    make_checkpoint(d, image_size=SIZE)
    return d


@pytest.fixture(scope="module")
def ckpt64(tmp_path_factory):
    """Pictures large enough that the encoder's last feature map has more than one cell: at 32 px its spatial
    softmax sees one cell and its features do not depend on the picture."""
    d = tmp_path_factory.mktemp("distill64") / "ckpt"
    make_checkpoint(d, image_size=64)
    return d


def learner(ckpt, **cfg) -> OnlineDistill:
    torch.manual_seed(0)
    policy = DiffusionPolicy.from_checkpoint(ckpt).eval()
    demos = SequenceDataset(synthetic_episodes(n=3, length=20, image_size=policy.cfg.image_size, seed=1), policy.cfg)
    return OnlineDistill(policy, DistillConfig(**{"batch_size": 8, **cfg}), demos=demos, publish_every=2)


def decision(policy, episode: int, chunk: int, seed: int) -> Decision:
    c = policy.cfg
    rng = np.random.default_rng(seed)
    obs = {"images": {"scene": rng.integers(0, 256, (c.obs_horizon, c.image_size, c.image_size, 3), dtype=np.uint8)},
           "qpos": rng.normal(size=(c.obs_horizon, 7)).astype(np.float32),
           "gripper": rng.uniform(0, 0.08, (c.obs_horizon, 1)).astype(np.float32)}
    chain = rng.uniform(-1, 1, (1, c.pred_horizon, c.action_dim)).astype(np.float32)
    return Decision(obs=obs, chain=chain, chain_logprob=np.zeros(0), policy_version=0, episode=episode, chunk=chunk)


def feed(online: OnlineDistill, episode: int, chunks: int, success: bool | None) -> None:
    for k in range(chunks):
        online.add_step(episode, 8 * k, k, first=True, decision=decision(online.policy, episode, k, 100 * episode + k))
    if success is not None:
        online.end_episode(episode, success)


def test_only_the_chunks_of_successful_episodes_are_kept(ckpt):
    online = learner(ckpt)
    feed(online, 0, 3, True)
    feed(online, 1, 2, False)
    feed(online, 2, 2, None)
    online.abort_episode(2)
    online.end_episode(3, True)  # the outcome before the decision (another topic): kept when it comes
    feed(online, 3, 1, None)
    assert len(online.distiller.replay) == 4 and online.counts["decisions_kept"] == 4
    assert online.counts["decisions_dropped_failed"] == 2 and online.counts["decisions_dropped_aborted"] == 2
    assert not online.pending
    assert online.owed() == 4  # utd 1 per kept decision, no offline steps


def test_a_decision_that_does_not_fit_the_policy_is_refused_naming_the_field(ckpt):
    online = learner(ckpt)
    bad = decision(online.policy, 0, 0, 0)
    bad.obs["qpos"] = bad.obs["qpos"][:, :6]
    assert "qpos" in online.add_step(0, 0, 0, first=True, decision=bad)
    assert online.counts["decisions_refused"] == 1


ALIGN = {"objective": "align", "train_params": ("encoders",)}


@pytest.mark.parametrize("augment", [{}, {"augment_color": 1.0, "augment_warp": 1.0},
                                     {**ALIGN, "augment_color": 1.0, "augment_warp": 1.0}],
                         ids=["plain", "augmented", "align"])
def test_the_learner_is_deterministic_on_fixed_data_offline_stage_first(request, augment):
    ckpt = request.getfixturevalue("ckpt64" if "objective" in augment else "ckpt")  # align needs a feature map
    runs = []
    for _ in range(2):
        online = learner(ckpt, offline_steps=2, **augment)
        assert online.owed() == 2  # the offline stage: demonstrations only, before any episode
        for _ in range(2):
            online.step()
        feed(online, 0, 3, True)
        while online.owed():
            online.step()
        runs.append(online.payload().tensors)
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_only_the_trained_layers_change_and_cross_the_wire(ckpt):
    online = learner(ckpt)
    before = {k: v.clone() for k, v in online.policy.net.state_dict().items()}
    feed(online, 0, 2, True)
    while online.owed():
        assert online.step().refused is None
    p = online.payload()
    names = set(trained_names(online.policy.net, DistillConfig().train_params))
    assert set(p.tensors) == names and p.version == 1
    after = online.policy.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k not in names)
    assert any(not torch.equal(before[k], after[k]) for k in names)
    assert p.arch_id == distill_arch_id(online.policy.arch_id, {k: after[k].shape for k in names})
    assert online.payload().version == 2


@pytest.mark.parametrize("ema", [{}, {"ema_decay": 0.9}], ids=["last-step", "ema"])
def test_resumed_learner_continues_where_it_stopped_and_its_policy_is_a_checkpoint(ckpt, tmp_path, ema):
    online = learner(ckpt, **ema)
    feed(online, 0, 2, True)
    feed(online, 1, 2, None)  # still running at the save: its decisions are saved with the learner
    online.step()
    online.save(tmp_path / "learner")
    at_save = online.distiller.tensors()
    back = OnlineDistill.load(tmp_path / "learner", {"demos": ""})
    back.distiller.demos = online.distiller.demos  # the same demonstrations (read from disk in a real resume)
    assert back.pending.keys() == {1} and len(back.distiller.replay) == 2 and back.steps == 1
    a, b = online.step().stats, back.step().stats
    assert a["actor_loss"] == b["actor_loss"]
    after, back_after = online.distiller.tensors(), back.distiller.tensors()
    assert all(torch.equal(after[k], back_after[k]) for k in after)
    # <dir>/policy: an ordinary checkpoint of the same architecture, holding the weights of the save
    policy = DiffusionPolicy.from_checkpoint(tmp_path / "learner" / "policy", expected_arch_id=online.policy.arch_id)
    params = dict(policy.net.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in at_save.items())


def test_with_ema_decay_the_published_weights_are_the_moving_average_of_the_trained_ones(ckpt):
    online = learner(ckpt, ema_decay=0.6, offline_steps=6)
    d = online.distiller
    start = [p.detach().clone() for p in d.params]
    expected, trained = [s.clone() for s in start], []
    for n in range(6):
        online.step()
        trained.append([p.detach().clone() for p in d.params])
        decay = min(0.6, 1.0 - (1.0 + n) ** -0.75)  # Chi et al.'s warm-up (optim/ema.py), capped
        expected = [decay * e + (1.0 - decay) * t for e, t in zip(expected, trained[-1])]
    published = online.payload().tensors
    for name, e, t in zip(d.names, expected, trained[-1]):
        assert torch.allclose(published[name], e, atol=1e-6)
    assert any(not torch.allclose(published[name], t) for name, t in zip(d.names, trained[-1]))
    assert all(torch.equal(p, t) for p, t in zip(d.params, trained[-1]))  # training goes on from its own weights
    assert "a moving average of the trained weights published (decay up to 0.6)" in online.ready_line()
    plain = learner(ckpt, offline_steps=1)
    plain.step()
    assert "the last gradient step's weights published" in plain.ready_line()
    assert all(torch.equal(plain.payload().tensors[n], p) for n, p in zip(plain.distiller.names, plain.distiller.params))


def test_align_trains_the_encoder_alone_towards_the_starting_features_on_demonstrations(ckpt64):
    online = learner(ckpt64, offline_steps=3, augment_color=1.0, augment_warp=1.0, **ALIGN)
    d = online.distiller
    rng = np.random.default_rng(3)  # textured pictures (the synthetic demonstrations' are flat colour)
    c = d.policy.cfg
    images = {"scene": torch.from_numpy(rng.integers(0, 256, (4, c.obs_horizon, c.image_size, c.image_size, 3),
                                                     dtype=np.uint8))}
    unchanged = learner(ckpt64, offline_steps=3, augment_pad=0, **ALIGN).distiller
    assert float(unchanged.align_loss(images).detach()) == 0.0  # the recorded pictures keep their features
    assert float(d.align_loss(images).detach()) > 0.0  # shifted, jittered and warped ones do not
    before = {k: v.clone() for k, v in online.policy.net.state_dict().items()}
    feed(online, 0, 3, True)
    assert online.owed() == 3  # kept chunks owe nothing: they have no recorded picture to align to
    assert d.batch()["demo_rows"] == d.cfg.batch_size
    while online.owed():
        assert online.step().refused is None
    after = online.policy.net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("encoders.") for k in changed)
    assert set(online.payload().tensors) == set(trained_names(online.policy.net, ("encoders",)))
    assert "encoder alignment" in online.ready_line()


def test_an_aligning_learner_resumes_with_its_starting_encoder(ckpt64, tmp_path, monkeypatch):
    import mechanic_rl_ros.rl.online_distill as module

    online = learner(ckpt64, offline_steps=4, augment_warp=1.0, **ALIGN)
    online.step()
    online.save(tmp_path / "learner")
    monkeypatch.setattr(module, "load_demos", lambda *a: online.distiller.demos)  # read from disk in a real resume
    back = OnlineDistill.load(tmp_path / "learner", {"demos": "the same"})
    teacher, again = online.distiller.teacher.state_dict(), back.distiller.teacher.state_dict()
    assert all(torch.equal(teacher[k], again[k]) for k in teacher)  # not the trained encoder it was saved with
    assert back.owed() == 3 and online.step().stats["actor_loss"] == back.step().stats["actor_loss"]
    state = online.distiller.state_dict()
    del state["teacher"]
    with pytest.raises(ValueError, match="teacher"):
        back.distiller.load_state_dict(state)


def test_align_without_demonstrations_is_refused(ckpt):
    policy = DiffusionPolicy.from_checkpoint(ckpt).eval()
    with pytest.raises(ValueError, match="objective: align learns from the demonstrations"):
        OnlineDistill(policy, DistillConfig(**ALIGN), demos=None)


@pytest.mark.parametrize("text, message", [
    ("objective: bc", "objective: got 'bc'; expected diffusion or align"),
    ("objective: align\ntrain_params: [encoders, unet.up]", "train_params: .*expected prefixes under encoders"),
    ("demo_fraction: 1.5", "demo_fraction"),
    ("augment_kept: maybe", "augment_kept: got 'maybe'; expected true or false"),
    ("augment_color: 1.5", "augment_color: got 1.5; expected a number in \\[0, 1\\]"),
    ("augment_share: -0.1", "augment_share: got -0.1; expected a number in \\[0, 1\\]"),
    ("augment_share: abc", "augment_share: got 'abc'; expected a number"),
    ("batch_size: 6.5", "batch_size: got 6.5; expected an integer"),
    ("ema_decay: 1.0", "ema_decay: got 1.0; expected a number in \\[0, 1\\) \\(0: no average\\)"),
    ("learning_rate: 0.1", "unknown key.*learning_rate"),
])
def test_bad_settings_are_refused_naming_the_field(tmp_path, text, message):
    f = tmp_path / "distill.yaml"
    f.write_text(text + "\n")
    with pytest.raises(ValueError, match=message):
        load_distill_config(f)


def test_a_spec_overrides_keys_of_its_file_or_of_the_default(tmp_path):
    f = tmp_path / "base.yaml"
    f.write_text("train_params: [encoders, unet.up]\naugment_warp: 1.0\noffline_steps: 1000\n")
    cfg = load_distill_config(f"{f} augment_warp=0.5 train_params=[unet.up, unet.final]")
    assert (cfg.augment_warp, cfg.offline_steps, cfg.train_params) == (0.5, 1000, ("unet.up", "unet.final"))
    default = load_distill_config("")
    assert load_distill_config("offline_steps=7") == replace(default, offline_steps=7)
    for spec, message in ((f"{f} augment_wrap=0.5", "with overrides \\['augment_wrap'\\]: unknown key"),
                          (f"{f} augment_warp=2", "augment_warp: got 2; expected a number in \\[0, 1\\]"),
                          (f"{f} extra.yaml", "'extra.yaml' is neither the first item"),
                          (f"{f} train_params=[unet.up", "unbalanced brackets")):
        with pytest.raises(ValueError, match=message):
            load_distill_config(spec)


def test_a_bare_name_is_a_shipped_setting_and_a_missing_or_malformed_file_is_refused(tmp_path, monkeypatch):
    """As the launch argument: `--distill-config 'distill_encoder.yaml offline_steps=3'` from any directory."""
    monkeypatch.chdir(tmp_path)
    shipped = load_distill_config(REPO / "config" / "distill_encoder.yaml")
    assert load_distill_config("distill_encoder.yaml offline_steps=3") == replace(shipped, offline_steps=3)
    with pytest.raises(ValueError, match="distill config 'distill_encoder.yml': cannot be read \\(FileNotFoundError: "
                                         "No such file or directory\\); settings are a path or a file of .*distill_encoder.yaml"):
        load_distill_config("distill_encoder.yml")
    (tmp_path / "bad.yaml").write_text("offline_steps: [1\n")
    with pytest.raises(ValueError, match="distill config 'bad.yaml': not valid YAML \\(ParserError: .* line 1, .*; settings"):
        load_distill_config("bad.yaml")
    (tmp_path / "list.yaml").write_text("- offline_steps: 1\n")
    with pytest.raises(ValueError, match="a list at the top level; expected a mapping of keys to values"):
        load_distill_config("list.yaml")
    (tmp_path / "distill_encoder.yaml").write_text("offline_steps: 5\n")  # a file here wins over the shipped one
    assert load_distill_config("distill_encoder.yaml").offline_steps == 5


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config").glob("distill*.yaml")))
def test_every_shipped_distillation_config_loads(name):
    """Each config/distill*.yaml is a valid distillation setting (the launch argument resolves bare names there)."""
    cfg = load_distill_config(REPO / "config" / name)
    assert cfg.train_params and 0.0 <= cfg.demo_fraction <= 1.0


def test_augmentation_reaches_the_loss_and_is_named_at_start(ckpt):
    plain, jittered = learner(ckpt), learner(ckpt, augment_color=1.0, augment_warp=1.0)
    batch = plain.distiller.batch()
    assert plain.distiller.step(batch)["actor_loss"] != jittered.distiller.step(batch)["actor_loss"]
    assert "images jittered (colour 1.0, warp 1.0, share 0.8)" in jittered.ready_line()
    assert "no colour or warp augmentation" in plain.ready_line()


def trained_images(online, batch):
    """The scene images one gradient step on ``batch`` trained on (after the learner's augmentation)."""
    seen = []
    loss = online.policy.compute_loss
    online.policy.compute_loss = lambda b, **kw: seen.append(b["images"]["scene"]) or loss(b, **kw)
    online.distiller.step(batch)
    return seen[0]


def test_augment_kept_false_leaves_the_kept_rows_as_the_robot_saw_them(ckpt):
    """With ``augment_kept: false`` colour and warp reach the demonstration rows of a batch only."""
    online = learner(ckpt, augment_color=1.0, augment_warp=1.0, augment_kept=False)
    feed(online, 0, 3, True)
    batch = online.distiller.batch()
    assert batch["demo_rows"] == 4
    sent, trained = batch["images"]["scene"], trained_images(online, batch)
    assert torch.equal(trained[4:], sent[4:])
    assert not torch.equal(trained[:4], sent[:4])


def test_augment_share_sets_how_many_rows_change(ckpt):
    """``augment_share`` is the share of a batch's rows that colour and warp reach; 0 leaves every row as
    recorded (and counts as no augmentation), 1 changes every one."""
    plain = learner(ckpt, augment_color=1.0, augment_warp=1.0, augment_share=0.0)
    assert not plain.distiller.augment.active and "no colour or warp augmentation" in plain.ready_line()
    every = learner(ckpt, augment_color=1.0, augment_warp=1.0, augment_share=1.0)
    batch = every.distiller.batch()
    sent, trained = batch["images"]["scene"], trained_images(every, batch)
    assert all(not torch.equal(trained[i], sent[i]) for i in range(len(sent)))


def test_a_layer_name_that_names_nothing_is_refused(ckpt):
    policy = DiffusionPolicy.from_checkpoint(ckpt)
    with pytest.raises(ValueError, match="train_params: 'unet.nowhere'"):
        trained_names(policy.net, ("unet.up", "unet.nowhere"))


def weights_intake(policy, shapes, arch):
    from mechanic_rl_ros.nodes.policy_weights import WeightsIntake

    problems, lines = [], []
    log = SimpleNamespace(info=lines.append, debug=lines.append)
    w = WeightsIntake(policy, None, arch, shapes, lambda: 10.0, log, lambda key, text: problems.append(text),
                      partial=True)
    w.planner = PolicyPlanner(policy, on_weights=w.on_swap, partial=True)
    return w, problems


def test_the_policy_swaps_in_distilled_layers_and_refuses_others_keeping_the_last_good(ckpt):
    from mechanic_rl_ros.wire.weights import weights_message

    online = learner(ckpt)
    feed(online, 0, 2, True)
    while online.owed():
        online.step()
    p = online.payload()
    policy = DiffusionPolicy.from_checkpoint(ckpt).eval()
    shapes = {k: tuple(v.shape) for k, v in p.tensors.items()}
    w, problems = weights_intake(policy, shapes, p.arch_id)
    good = weights_message(p.tensors, version=p.version, architecture_id=p.arch_id, finetune_steps=0)
    w.on_message(good)
    w.planner._swap()
    name = next(iter(p.tensors))
    assert not problems and w.planner.version == 1 and torch.equal(dict(policy.net.named_parameters())[name],
                                                                   p.tensors[name])
    # another architecture: the critic of selection, or layers of another policy
    other = weights_message(p.tensors, version=2, architecture_id="distill-0000000000000000", finetune_steps=0)
    corrupt = weights_message(p.tensors, version=3, architecture_id=p.arch_id, finetune_steps=0)
    corrupt.payload = corrupt.payload[:-100]
    wrong = dict(p.tensors)
    wrong[name] = torch.zeros(3)
    reshaped = weights_message(wrong, version=4, architecture_id=p.arch_id, finetune_steps=0)
    for msg in (other, corrupt, reshaped):
        w.on_message(msg)
        w.planner._swap()
    assert w.counts == {"weights_adopted": 1, "weights_rejected": 3}, problems
    assert "architecture_id" in problems[0] and "sha256" in problems[1] and name in problems[2]
    assert w.planner.version == 1 and torch.equal(dict(policy.net.named_parameters())[name], p.tensors[name])


def test_partial_weights_of_unknown_layers_or_shapes_change_nothing(ckpt):
    policy = DiffusionPolicy.from_checkpoint(ckpt)
    before = {k: v.clone() for k, v in policy.net.state_dict().items()}
    name = trained_names(policy.net, ("unet.final",))[0]
    with pytest.raises(CheckpointMismatchError, match="not a parameter"):
        policy.load_partial({name: before[name] + 1, "unet.extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointMismatchError, match=name.replace(".", r"\.")):
        policy.load_partial({name: torch.zeros(2)})
    assert all(torch.equal(before[k], v) for k, v in policy.net.state_dict().items())


def test_adopted_partial_weights_become_the_parameters_without_a_copy(ckpt):
    """load_partial(adopt=True) takes the given tensors as the network's parameters (no copy); a tensor that
    cannot be adopted (autograd attached) is refused before anything changes."""
    policy = DiffusionPolicy.from_checkpoint(ckpt)
    name = trained_names(policy.net, ("unet.final",))[0]
    params = dict(policy.net.named_parameters())
    new = {name: params[name].detach().clone() + 1}
    policy.load_partial(new, adopt=True)
    assert params[name].data_ptr() == new[name].data_ptr()
    before = params[name].detach().clone()
    with pytest.raises(CheckpointMismatchError, match="cannot be adopted"):
        policy.load_partial({name: torch.zeros_like(before, requires_grad=True)}, adopt=True)
    assert torch.equal(params[name], before)


def test_the_planner_stages_partial_weights_into_a_standby_and_swaps_the_networks(ckpt):
    """The planner copies staged layers into a standby network when they are staged (off the planning
    thread) and the swap between chunks exchanges the networks; a bad staging never reaches the swap."""
    policy = DiffusionPolicy.from_checkpoint(ckpt)
    name = trained_names(policy.net, ("unet.final",))[0]
    staged = {name: dict(policy.net.named_parameters())[name].detach().clone() + 1}
    planner = PolicyPlanner(policy, partial=True)
    active = policy.net
    planner.stage_weights(staged, 1, 0)
    assert policy.net is active
    planner._swap()
    params = dict(policy.net.named_parameters())
    assert planner.version == 1 and policy.net is not active and torch.equal(params[name], staged[name])
    assert params[name].data_ptr() != staged[name].data_ptr()  # copied into the standby, not adopted
    before = params[name].detach().clone()
    reports = []
    planner.on_weights = lambda version, err: reports.append((version, err))
    assert not planner.stage_weights({name: torch.zeros(2)}, 2, 0)
    assert reports and reports[0][0] == 2 and isinstance(reports[0][1], CheckpointMismatchError)
    planner._swap()
    assert planner.version == 1 and torch.equal(dict(policy.net.named_parameters())[name], before)
    assert len(reports) == 1


def test_headless_twin_end_to_end_in_the_simulator(tiny_ckpt, tmp_path):
    """`mechanic-rl train-distill` in the real simulator with the tiny state-only policy and two recorded
    demonstrations: the offline stage runs before the first episode, two runs with one seed end with the same
    weights and outcomes, and the policy it saves is an ordinary checkpoint `mechanic-rl eval` runs."""
    import json
    import subprocess
    import sys

    from mechanic_rl_ros.jobs.collect import CollectConfig, collect
    from mechanic_rl_ros.jobs.train_distill import main

    collect(CollectConfig(episodes=2, out=str(tmp_path / "demos"), noise=0.0, seed=5000, progress=False))
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["--checkpoint", str(tiny_ckpt), "--demos", str(tmp_path / "demos"), "--out", str(out),
                     "--total-steps", "160", "--num-envs", "2", "--offline-steps", "3", "--publish-every", "2",
                     "--final-eval-episodes", "2"]) == 0
        for f in ("episodes.csv", "evals.csv", "learning_curve.png", "eval.json", "learner/policy/config.json"):
            assert (out / f).is_file(), f
        outs.append(json.loads((out / "final.json").read_text()))
    a, b = outs
    assert a["grad_steps"] >= 3 and a["final_eval"]["successes"] == b["final_eval"]["successes"]
    ea, eb = (json.loads((tmp_path / n / "eval.json").read_text())["outcomes"] for n in "ab")
    assert ea == eb and len(ea) == 2
    pa = DiffusionPolicy.from_checkpoint(tmp_path / "a" / "learner" / "policy").net.state_dict()
    pb = DiffusionPolicy.from_checkpoint(tmp_path / "b" / "learner" / "policy").net.state_dict()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    start = DiffusionPolicy.from_checkpoint(tiny_ckpt).net.state_dict()
    assert any(not torch.equal(pa[k], start[k]) for k in pa)  # the offline stage changed the policy
    ev = subprocess.run([sys.executable, "-m", "mechanic_rl_ros.cli", "eval", "--checkpoint",
                         str(tmp_path / "a" / "learner" / "policy"), "--episodes", "1", "--video-episodes", "0",
                         "--out", str(tmp_path / "ev"), "--compare", str(tmp_path / "a" / "eval.json")],
                        capture_output=True, text=True, timeout=300)
    assert ev.returncode == 0 and "common seeds" in ev.stdout, ev.stdout + ev.stderr


def test_headless_offline_stage_alone_saves_the_policy_without_a_final_evaluation(tiny_ckpt, tmp_path, capsys):
    """`train-distill --total-steps 0 --final-eval-episodes 0`: the offline stage on the demonstrations and
    nothing else (the robot-free first step of docs/world.md's augmented demonstrations)."""
    import json

    from mechanic_rl_ros.jobs.collect import CollectConfig, collect
    from mechanic_rl_ros.jobs.train_distill import main

    collect(CollectConfig(episodes=1, out=str(tmp_path / "demos"), noise=0.0, seed=5000, progress=False))
    args = ["--checkpoint", str(tiny_ckpt), "--demos", str(tmp_path / "demos"), "--total-steps", "0",
            "--num-envs", "1", "--offline-steps", "3"]
    assert main([*args, "--out", str(tmp_path / "bad"), "--final-eval-episodes", "-1"]) != 0
    assert "--final-eval-episodes: got -1; expected an integer >= 0" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "o"), "--final-eval-episodes", "0"]) == 0
    final = json.loads((tmp_path / "o" / "final.json").read_text())
    assert final["final_eval"] is None and final["grad_steps"] == 3 and final["episodes"] == 0
    assert not (tmp_path / "o" / "eval.json").exists()
    assert "no final evaluation" in capsys.readouterr().out
    DiffusionPolicy.from_checkpoint(tmp_path / "o" / "learner" / "policy")


def intervened(online: OnlineDistill, episode: int, step: int, chunk: int, seed: int) -> np.ndarray:
    """A step a person commanded: its decision holds only the observation history."""
    d = decision(online.policy, episode, chunk, seed)
    d.chain = np.zeros((0, 0, online.policy.cfg.action_dim), np.float32)
    action = np.full(online.policy.cfg.action_dim, float(step), np.float32)
    online.add_step(episode, step, chunk, first=True, decision=d, intervention=True, action=action)
    return action


def test_intervened_steps_are_kept_as_demonstrations_with_their_sent_commands(ckpt):
    online = learner(ckpt)
    cfg = online.policy.cfg
    to, tp, a = cfg.obs_horizon, cfg.pred_horizon, cfg.action_dim
    # the policy's chunk 0 (steps 0-3), a person's steps 4-9 (chunks 1-6), the policy's chunk 7 (steps 10-13)
    for step in range(4):
        online.add_step(0, step, 0, first=step == 0, decision=decision(online.policy, 0, 0, 1) if step == 0 else None,
                        action=np.full(a, float(step)))
    for i, step in enumerate(range(4, 10)):
        intervened(online, 0, step, 1 + i, 10 + i)
    for step in range(10, 14):
        online.add_step(0, step, 7, first=step == 10, decision=decision(online.policy, 0, 7, 2) if step == 10 else None,
                        action=np.full(a, float(step)))
    assert online.counts["steps_intervened"] == 6 and len(online.distiller.replay) == 0  # the outcome decides
    online.end_episode(0, True)
    # six corrections and the policy's chunk after the last one; chunk 0 (it led astray) is dropped
    assert online.counts["corrections_kept"] == 6 and online.counts["decisions_kept"] == 1
    assert online.counts["decisions_dropped_before_correction"] == 1
    replay = online.distiller.replay
    rows = replay.rows(np.arange(len(replay)))
    first = int(np.flatnonzero((replay.episode[:len(replay)] == 0) & (replay.chunk[:len(replay)] == 1))[0])
    # the window of step 4, cut as a demonstration's: steps 4-T_o+1 .. 4-T_o+T_p, the last intervened step (9)
    # repeated past the intervention's end
    expect = np.clip(4 - to + 1 + np.arange(tp), 0, 9).astype(np.float32)
    np.testing.assert_array_equal(rows["action"][first][:, 0], expect)
    assert online.owed() == 7


def test_a_failed_episode_keeps_the_corrections_but_none_of_the_policys_chunks(ckpt):
    online = learner(ckpt)
    a = online.policy.cfg.action_dim
    online.add_step(1, 0, 0, first=True, decision=decision(online.policy, 1, 0, 3), action=np.zeros(a))
    intervened(online, 1, 1, 1, 4)
    online.add_step(1, 2, 2, first=True, decision=decision(online.policy, 1, 2, 5), action=np.zeros(a))
    online.end_episode(1, False)
    assert online.counts["corrections_kept"] == 1 and online.counts["decisions_kept"] == 0


def test_successful_corrections_only_drops_the_corrections_of_a_failed_episode(ckpt):
    online = learner(ckpt, successful_corrections_only=True)
    a = online.policy.cfg.action_dim
    for episode, success in ((1, False), (2, True)):
        online.add_step(episode, 0, 0, first=True, decision=decision(online.policy, episode, 0, 3),
                        action=np.zeros(a))
        intervened(online, episode, 1, 1, 4)
        intervened(online, episode, 2, 2, 5)
        online.end_episode(episode, success)
    # the failed episode's two corrections go, the successful one's stay
    assert online.counts["corrections_dropped_failed"] == 2 and online.counts["corrections_kept"] == 2
    assert set(online.distiller.replay.episode[:len(online.distiller.replay)]) == {2}
    # an intervened step that arrives after its failed episode ended is dropped too
    intervened(online, 1, 3, 3, 6)
    assert online.counts["corrections_dropped_failed"] == 3 and online.counts["corrections_kept"] == 2
    with pytest.raises(ValueError, match="successful_corrections_only: got 1; expected true or false"):
        learner(ckpt, successful_corrections_only=1)



def test_headless_twin_acts_in_a_changed_world_and_trains_the_layers_asked(tiny_ckpt, tmp_path, capsys):
    """`train-distill --world` acts and evaluates in the changed scene (the cube starts on a raised table),
    `--train-params` chooses the layers it trains (only they change), and a world out of range is refused
    naming the field before anything runs."""
    import json

    from mechanic_rl_ros.jobs.collect import CollectConfig, collect
    from mechanic_rl_ros.jobs.rollouts import sim_runner
    from mechanic_rl_ros.jobs.train_distill import main

    policy = DiffusionPolicy.from_checkpoint(tiny_ckpt)
    heights = []
    for world in (None, "table_up_3cm"):
        with sim_runner(policy, "lift", 1, 5, world=world) as runner:
            heights.append(float(runner.reset()[0]["task_state"][2]))
    assert heights[1] == pytest.approx(heights[0] + 0.03)

    collect(CollectConfig(episodes=1, out=str(tmp_path / "demos"), noise=0.0, seed=5000, progress=False))
    out = tmp_path / "w"
    assert main(["--checkpoint", str(tiny_ckpt), "--demos", str(tmp_path / "demos"), "--out", str(out),
                 "--world", "table_up_3cm", "--train-params", "unet.final", "--offline-steps", "3",
                 "--total-steps", "160", "--num-envs", "2", "--publish-every", "1", "--final-eval-episodes", "2"]) == 0
    assert "in world 'table_up_3cm'" in capsys.readouterr().out
    final = json.loads((out / "final.json").read_text())
    assert final["args"]["world"] == "table_up_3cm" and final["learner"]["train_params"] == ["unet.final"]
    assert "in world 'table_up_3cm'" in json.loads((out / "eval.json").read_text())["what"]
    start = DiffusionPolicy.from_checkpoint(tiny_ckpt).net.state_dict()
    after = DiffusionPolicy.from_checkpoint(out / "learner" / "policy").net.state_dict()
    changed = {k for k in start if not torch.equal(start[k], after[k])}
    assert final["grad_steps"] >= 3 and changed and all(k.startswith("unet.final.") for k in changed)

    assert main(["--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "bad"), "--world", "cube_mass=7"]) == 2
    assert "world field cube_mass: got 7" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
