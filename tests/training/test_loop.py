"""Training: the loss goes down, and an interrupted run resumes exactly where it stopped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.draw import disk

import wsi_pipeline.training.loop as train_module
from wsi_pipeline.config import ConfigError, load_config
from wsi_pipeline.datasets import Sample, SampleError, build_normalizer, write_common
from wsi_pipeline.datasets.mix import DATASET_KEY
from wsi_pipeline.inference.config import DEFAULT_MARGIN
from wsi_pipeline.model import load_checkpoint
from wsi_pipeline.postproc.config import PostprocConfig
from wsi_pipeline.stain import normalizer_from_meta
from wsi_pipeline.training.config import TrainConfig
from wsi_pipeline.training.loop import (
    class_counts,
    cost_matrix,
    load_samples,
    normalize_stain,
    train,
)

NAMES = ("background", "round", "small")


def _sample(seed: int, shape: tuple[int, int] = (64, 64), mpp: float | None = 0.25) -> Sample:
    rng = np.random.default_rng(seed)
    inst = np.zeros(shape, np.int32)
    typ = np.zeros(shape, np.int32)
    image = np.full((*shape, 3), 230, np.uint8)
    for i in range(1, 6):
        r, c, rad = rng.integers(10, shape[0] - 10), rng.integers(10, shape[1] - 10), rng.integers(4, 8)
        rr, cc = disk((r, c), rad, shape=inst.shape)
        inst[rr, cc] = i
        typ[rr, cc] = 1 if rad > 5 else 2
        image[rr, cc] = (80, 40, 140) if rad > 5 else (120, 60, 160)
    return Sample(f"s{seed}", image, inst, typ, NAMES, mpp, group=f"g{seed}")


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = {
        "out_dir": str(tmp_path / "run"),
        "epochs": 2,
        "batch_size": 2,
        "num_workers": 0,
        "amp": False,
        "patch_size": 64,
        "model": {"n_types": 3, "encoder": "resnet18", "width": 8},
        "optim": {"lr": 3e-3, "schedule": "constant"},
        "augment": {"p_affine": 0.0, "p_hed": 0.0, "p_color": 0.0, "p_blur": 0.0},
        "val_every": 100,
    }
    base.update(kw)
    return TrainConfig.model_validate(base)


def test_loss_decreases_on_tiny_set(tmp_path):
    torch.manual_seed(0)
    data = ([_sample(i) for i in range(4)], [_sample(9)])
    result = train(_cfg(tmp_path, epochs=6), samples=data, progress=False)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.8 * losses[0], losses
    assert (tmp_path / "run" / "history.csv").is_file()
    assert (tmp_path / "run" / "curves.png").is_file()
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best.class_names == NAMES
    assert "cost_matrix" in best.meta and "formula" in best.meta["cost_info"]


def test_resume_continues_from_saved_epoch(tmp_path):
    data = ([_sample(i) for i in range(4)], [_sample(9)])
    straight = train(_cfg(tmp_path / "a", epochs=3), samples=data, progress=False)
    train(_cfg(tmp_path / "b", epochs=2), samples=data, progress=False)
    state_2 = torch.load(tmp_path / "b" / "run" / "last.pt", weights_only=True)["train_state"]
    assert state_2["epoch"] == 2
    resumed = train(_cfg(tmp_path / "b", epochs=3), samples=data, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    # Same data order, augmentation and optimizer state: the third epoch is reproduced.
    assert resumed.history[2]["train_loss"] == pytest.approx(straight.history[2]["train_loss"], rel=1e-4)
    state_3 = torch.load(tmp_path / "b" / "run" / "last.pt", weights_only=True)["train_state"]
    assert state_3["optimizer"]["state"][0]["step"] > state_2["optimizer"]["state"][0]["step"]


def test_class_counts_pixels_and_instances():
    s = _sample(0)
    pixels = class_counts([s], 3, "pixels")
    assert pixels.sum() == 64 * 64
    inst = class_counts([s], 3, "instances")
    assert inst[1:].sum() == len(np.unique(s.inst_map)) - 1
    assert inst[0] == inst[1:].max()


def test_instance_mode_background_gets_the_smallest_cost(tmp_path):
    samples = [_sample(i) for i in range(4)]
    w, info = cost_matrix(_cfg(tmp_path, cost={"counts": "instances"}), samples)
    assert info["counts"][0] == max(info["counts"][1:])
    assert w[0, 1] == w[1:, 0].min() and w[0, 1] < w.max()


def test_config_errors_name_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: many\noptim:\n  lr: 0.1\n  warmup: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad, TrainConfig)
    text = str(err.value)
    assert "bad.yaml" in text and "epochs:" in text and "optim.warmup: unknown key" in text


def test_common_format_honours_on_error(tmp_path):
    write_common([_sample(i) for i in range(3)], tmp_path / "data")
    np.savez_compressed(tmp_path / "data" / "labels" / "s1.npz", inst_map=np.zeros((8, 8), np.int32))
    data = {"format": "common", "root": str(tmp_path / "data"), "val_fraction": 0.0}
    with pytest.raises(SampleError, match="s1"):
        load_samples(_cfg(tmp_path, data=data))
    train_set, _ = load_samples(_cfg(tmp_path, data={**data, "on_error": "skip"}))
    assert [s.name for s in train_set] == ["s0", "s2"]


def test_images_of_any_size_train_and_validate(tmp_path):
    train_set = [_sample(0, (96, 80)), _sample(1, (48, 64)), _sample(2, (64, 64), mpp=None)]
    val_set = [_sample(9, (72, 100)), _sample(8, (40, 50))]
    result = train(_cfg(tmp_path, epochs=1, val_every=1), samples=(train_set, val_set), progress=False)
    row = result.history[0]
    assert np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"])
    assert "val_pq" in row and "val_dice" in row


def test_sample_at_another_mpp_is_refused_by_name(tmp_path):
    data = ([_sample(0), _sample(1, mpp=0.5)], [_sample(9, mpp=0.26)])
    with pytest.raises(ValueError, match=r"s1 .*mpp 0.5 differs .* 0.25"):
        train(_cfg(tmp_path), samples=data, progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_patch_size_must_be_a_multiple_of_32(tmp_path):
    with pytest.raises(ValueError, match="multiple"):
        _cfg(tmp_path, patch_size=100)


def test_resume_through_worker_process_changes_augmentation_each_epoch(tmp_path, monkeypatch):
    """The default DataLoader path (one worker process, not persistent): every epoch gets new
    augmentation, and a resumed run gets the same per-epoch batches as a straight one."""
    seen: list[torch.Tensor] = []
    real_loss = train_module.multitask_loss

    def recording_loss(out, batch, *args):
        if torch.is_grad_enabled():  # training steps only, not validation
            seen.append(batch["image"].detach().clone())
        return real_loss(out, batch, *args)

    monkeypatch.setattr(train_module, "multitask_loss", recording_loss)
    augment = {"p_affine": 1.0, "p_hed": 1.0, "p_color": 0.0, "p_blur": 0.0}
    data = ([_sample(0)], [])
    kw = {"batch_size": 1, "num_workers": 1, "augment": augment, "model": {"n_types": 3, "width": 8}}
    train(_cfg(tmp_path / "a", epochs=2, **kw), samples=data, progress=False)
    straight, seen[:] = list(seen), []
    train(_cfg(tmp_path / "b", epochs=1, **kw), samples=data, progress=False)
    train(_cfg(tmp_path / "b", epochs=2, **kw), samples=data, progress=False)
    assert len(straight) == len(seen) == 2
    assert not torch.equal(straight[0], straight[1]), "augmentation frozen across epochs"
    assert torch.equal(straight[0], seen[0]) and torch.equal(straight[1], seen[1])


def test_init_from_starts_at_the_given_weights_with_a_fresh_schedule(tmp_path):
    data = ([_sample(i) for i in range(4)], [_sample(9)])
    first = train(_cfg(tmp_path, epochs=1, max_steps_per_epoch=1), samples=data, progress=False)
    src = first.run_dir / "last.pt"
    cfg = _cfg(tmp_path, out_dir=str(tmp_path / "ft"), epochs=1, init_from=str(src),
               optim={"lr": 1e-12, "schedule": "constant"}, max_steps_per_epoch=1)
    result = train(cfg, samples=data, progress=False)
    assert len(result.history) == 1  # a new run: epoch numbering starts again
    before, after = load_checkpoint(src).net.state_dict(), load_checkpoint(result.run_dir / "last.pt")
    # lr 1e-12: one step moves nothing measurable, so equal weights prove the copy.
    for name, value in after.net.state_dict().items():
        if value.is_floating_point() and "running" not in name:
            assert torch.allclose(value, before[name], atol=1e-6), name
    assert after.meta["init_from"]["sha256"] == load_checkpoint(src).sha256


def test_init_from_with_another_architecture_is_refused_by_name(tmp_path):
    data = ([_sample(i) for i in range(2)], [])
    first = train(_cfg(tmp_path, epochs=1, max_steps_per_epoch=1), samples=data, progress=False)
    cfg = _cfg(tmp_path, out_dir=str(tmp_path / "ft"), init_from=str(first.run_dir / "last.pt"),
               model={"n_types": 3, "encoder": "resnet18", "width": 16})
    with pytest.raises(ValueError, match="last.pt.*differs"):
        train(cfg, samples=data, progress=False)


def test_stain_target_is_fitted_once_applied_to_train_and_val_and_saved(tmp_path):
    """Reinhard with a reference image: train AND val images are normalised at load time, and
    best.pt/last.pt carry the fitted target so inference rebuilds the same normaliser."""
    ref = _sample(20).image.copy()
    ref[ref[..., 0] < 200] = (150, 60, 120)  # another 'lab': redder nuclei
    Image.fromarray(ref).save(tmp_path / "ref.png")
    stain = {"method": "reinhard", "reference_images": [str(tmp_path / "ref.png")]}
    cfg = _cfg(tmp_path, epochs=1, max_steps_per_epoch=1, data={"stain": stain})
    data = ([_sample(i) for i in range(2)], [_sample(9)])
    norm = build_normalizer(cfg.data.stain)
    train_set, val_set, meta = normalize_stain(cfg, *data)
    for before, after in zip(data[0] + data[1], train_set + val_set, strict=True):
        np.testing.assert_array_equal(after.image, norm(before.image))
        assert not np.array_equal(after.image, before.image)
    assert meta == norm.to_meta() and meta["method"] == "reinhard"

    train(cfg, samples=data, progress=False)
    for name in ("best.pt", "last.pt"):
        saved = load_checkpoint(tmp_path / "run" / name).meta["stain"]
        assert saved == meta
        rebuilt = normalizer_from_meta(saved)
        np.testing.assert_array_equal(rebuilt.mean, norm.mean)
        np.testing.assert_array_equal(rebuilt.std, norm.std)


def test_without_stain_config_checkpoints_carry_no_stain(tmp_path):
    data = ([_sample(i) for i in range(2)], [])
    assert normalize_stain(_cfg(tmp_path), *data) == (*data, None)
    train(_cfg(tmp_path, epochs=1, max_steps_per_epoch=1), samples=data, progress=False)
    assert normalizer_from_meta(load_checkpoint(tmp_path / "run" / "last.pt").meta["stain"]) is None


CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("train_*.yaml")))
def test_shipped_training_configs_load(name):
    cfg = load_config(CONFIGS / name, TrainConfig)
    assert cfg.model.encoder == "resnet34" and cfg.model.n_types == 5


def _untyped(seed: int, dataset: str) -> Sample:
    s = _sample(seed)
    return Sample(s.name, s.image, s.inst_map, None, ("background", "nucleus"), 0.25,
                  group=s.group, meta={DATASET_KEY: dataset})


def test_mix_with_untyped_data_validates_each_dataset_and_types_from_typed_only(tmp_path):
    typed = [_sample(i) for i in range(3)]
    for s in typed:
        s.meta[DATASET_KEY] = "typed"
    val_typed = _sample(9)
    val_typed.meta[DATASET_KEY] = "typed"
    data = (typed + [_untyped(4, "plain"), _untyped(5, "plain")], [val_typed, _untyped(8, "plain")])
    cfg = _cfg(tmp_path, epochs=1, val_every=1,
               sampling={"samples_per_epoch": 4, "rare_class_strength": 1.0})
    result = train(cfg, samples=data, progress=False)
    row = result.history[-1]
    assert {"val_typed_pq", "val_typed_mpq", "val_plain_pq"} <= set(row)
    assert "val_plain_mpq" not in row and row["val_mpq"] == row["val_typed_mpq"]
    assert row["val_pq"] == pytest.approx(np.nanmean([row["val_typed_pq"], row["val_plain_pq"]]))
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert tuple(ckpt.class_names) == NAMES  # classes of the typed data, not "nucleus"
    # cost matrix from typed pixels only: the untyped images add no counts
    assert ckpt.meta["cost_info"]["counts"] == class_counts(typed, 3, "pixels").tolist()


def test_validation_scores_with_the_configured_postproc_and_checkpoints_record_it(tmp_path,
                                                                                  monkeypatch, caplog):
    """The training config's postproc: section is what validation scores with (and so what picks
    best.pt), on the validation tile grid; both checkpoints say which settings those were."""
    assert TrainConfig().postproc == PostprocConfig()  # the defaults unless configured
    seen: list[dict] = []
    real = train_module.score_by_dataset

    def spy(*args, **kw):
        seen.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(train_module, "score_by_dataset", spy)
    data = ([_sample(i) for i in range(2)], [_sample(9)])
    tuned = {"ns_threshold": 0.7, "edge_threshold": 0.05}
    cfg = _cfg(tmp_path, epochs=1, max_steps_per_epoch=1, val_every=1, postproc=tuned)
    train(cfg, samples=data, progress=False)
    assert len(seen) == 1 and seen[0]["postproc"] == PostprocConfig(**tuned)
    assert (seen[0]["tile"], seen[0]["stride"]) == (64 + 2 * DEFAULT_MARGIN, 64)
    for name in ("best.pt", "last.pt"):
        saved = load_checkpoint(tmp_path / "run" / name).meta["train_config"]["postproc"]
        assert PostprocConfig.model_validate(saved) == PostprocConfig(**tuned)

    # resuming under other settings scores with those, and says the earlier epochs did not
    with caplog.at_level("WARNING", logger="wsi_pipeline.training.loop"):
        train(_cfg(tmp_path, epochs=2, max_steps_per_epoch=1, val_every=1), samples=data,
              progress=False)
    assert seen[-1]["postproc"] == PostprocConfig()
    assert "postproc settings changed since the earlier epochs (edge_threshold, ns_threshold)" \
        in caplog.text


def _float_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in net.state_dict().items() if v.is_floating_point()}


def test_ema_checkpoints_hold_the_average_and_resume_reproduces_it(tmp_path):
    data = ([_sample(i) for i in range(4)], [_sample(9)])
    kw = {"optim": {"lr": 3e-3, "schedule": "constant", "ema_decay": 0.9}, "max_steps_per_epoch": 2}
    train(_cfg(tmp_path / "a", epochs=3, **kw), samples=data, progress=False)
    train(_cfg(tmp_path / "b", epochs=2, **kw), samples=data, progress=False)
    train(_cfg(tmp_path / "b", epochs=3, **kw), samples=data, progress=False)
    straight = torch.load(tmp_path / "a" / "run" / "last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "b" / "run" / "last.pt", weights_only=True)
    assert straight["train_state"]["ema_updates"] == resumed["train_state"]["ema_updates"] == 6
    for name, value in straight["state_dict"].items():
        if value.is_floating_point():
            assert torch.allclose(value, resumed["state_dict"][name], atol=1e-5), name
    # The saved weights are the average, not the last step's weights kept beside them.
    raw = straight["train_state"]["train_weights"]
    moved = [n for n, v in straight["state_dict"].items()
             if v.is_floating_point() and not torch.allclose(v, raw[n], atol=1e-6)]
    assert moved, "the checkpoint holds the optimised weights, not their average"
    assert "train_weights" not in torch.load(tmp_path / "a" / "run" / "best.pt",
                                             weights_only=True).get("train_state", {})


def test_ema_decay_near_zero_keeps_the_optimised_weights(tmp_path):
    data = ([_sample(i) for i in range(4)], [])
    cfg = _cfg(tmp_path, epochs=1, max_steps_per_epoch=3,
               optim={"lr": 3e-3, "schedule": "constant", "ema_decay": 1e-9})
    train(cfg, samples=data, progress=False)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    raw = state["train_state"]["train_weights"]
    for name, value in state["state_dict"].items():
        if value.is_floating_point():
            assert torch.allclose(value, raw[name], atol=1e-6), name
    net = load_checkpoint(tmp_path / "run" / "last.pt").net
    assert set(_float_state(net)) == {k for k, v in raw.items() if v.is_floating_point()}


def test_train_parts_trains_only_the_type_decoder_and_keeps_the_rest_bit_for_bit(tmp_path):
    data = ([_sample(i) for i in range(4)], [_sample(9)])
    first = train(_cfg(tmp_path, epochs=1, max_steps_per_epoch=1), samples=data, progress=False)
    src = first.run_dir / "last.pt"
    cfg = _cfg(tmp_path, out_dir=str(tmp_path / "nc"), epochs=1, init_from=str(src),
               max_steps_per_epoch=3,
               optim={"lr": 3e-3, "schedule": "constant", "ema_decay": 0.5,
                      "train_parts": ["decoders.nc"]})
    result = train(cfg, samples=data, progress=False)
    before = load_checkpoint(src).net
    after = load_checkpoint(result.run_dir / "last.pt").net
    old = before.state_dict()
    moved = {name for name, value in after.state_dict().items() if not torch.equal(value, old[name])}
    assert moved and all(name.startswith("decoders.nc.") for name in moved), sorted(moved)[:5]
    # Frozen parts (BatchNorm statistics included): the NS and HV maps are exactly the old ones.
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        out_before, out_after = before.eval()(x), after.eval()(x)
    assert torch.equal(out_before["ns"], out_after["ns"]) and torch.equal(out_before["hv"], out_after["hv"])
    assert not torch.equal(out_before["nc"], out_after["nc"])


def test_train_parts_without_starting_weights_is_refused(tmp_path):
    with pytest.raises(ValueError, match="init_from"):
        _cfg(tmp_path, optim={"train_parts": ["decoders.nc"]})


def test_network_parts_cover_every_parameter_of_the_network():
    from wsi_pipeline.model import MultiTaskNet
    from wsi_pipeline.training.config import NETWORK_PARTS

    net = MultiTaskNet.from_config(_cfg(Path("unused")).model)
    named = {f"{part}.{name}" for part in NETWORK_PARTS
             for name, _ in net.get_submodule(part).named_parameters()}
    assert named == {name for name, _ in net.named_parameters()}


def _mix_data() -> tuple[list[Sample], list[Sample]]:
    typed = [_sample(i) for i in range(3)]
    val_typed = _sample(9)
    for s in (*typed, val_typed):
        s.meta[DATASET_KEY] = "typed"
    return typed + [_untyped(4, "plain")], [val_typed, _untyped(8, "plain")]


def test_selection_picks_best_pt_by_the_named_scores(tmp_path):
    cfg = _cfg(tmp_path, epochs=3, val_every=1, max_steps_per_epoch=1,
               selection=["plain_pq", "typed_mpq"], sampling={"samples_per_epoch": 4})
    result = train(cfg, samples=_mix_data(), progress=False)
    means = [np.mean([row["val_plain_pq"], row["val_typed_mpq"]]) for row in result.history]
    assert result.best_epoch == 1 + int(np.argmax(means))
    assert load_checkpoint(result.run_dir / "best.pt").meta["epoch"] == result.best_epoch


@pytest.mark.parametrize("key", ["plain_mpq", "typd_pq", "val_pq"])
def test_selection_of_a_score_validation_will_not_give_is_refused_before_training(tmp_path, key):
    cfg = _cfg(tmp_path, epochs=1, selection=[key])
    with pytest.raises(ValueError, match=f"selection: \\['{key}'\\]"):
        train(cfg, samples=_mix_data(), progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_non_finite_loss_stops_training_without_writing_checkpoints(tmp_path):
    from wsi_pipeline.training.loop import NonFiniteLossError

    cfg = _cfg(tmp_path, epochs=1, optim={"lr": 1e30, "schedule": "constant"})
    with pytest.raises(NonFiniteLossError, match="not finite"):
        train(cfg, samples=([_sample(i) for i in range(6)], []), progress=False)
    assert not (tmp_path / "run" / "best.pt").exists() and not (tmp_path / "run" / "last.pt").exists()
