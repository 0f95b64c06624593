"""Configs: presets load, overrides are type-checked, unknown keys are errors."""
import pytest

from elbolab.config import Config, apply_overrides, dump_toml, from_dict, load_preset, preset_names
from elbolab.errors import ConfigError
from elbolab.schedules import iwae_lr, linear_anneal


def test_every_preset_loads():
    names = preset_names()
    assert {"vae-mnist", "beta-vae-mnist", "iwae-mnist-k5", "iwae-mnist-k50"} <= set(names)
    for name in names:
        assert load_preset(name).preset == name


def test_iwae_presets_follow_the_paper():
    config = load_preset("iwae-mnist-k50")
    assert (config.bound.name, config.bound.k) == ("iwae", 50)
    assert config.model.hidden == [200, 200] and config.model.latent_dim == 50 and config.model.activation == "tanh"
    assert config.train.batch_size == 20 and config.train.lr_schedule == "iwae" and config.train.epochs == 3280
    assert config.data.train_splits == ["train", "valid"] and config.data.binarize == "dynamic"


def test_overrides_dotted_and_bare():
    config = apply_overrides(load_preset("vae-mnist"), ["bound.k=7", "beta=0.5", "hidden=[64, 32]", "device=auto"])
    assert config.bound.k == 7 and config.bound.beta == 0.5
    assert config.model.hidden == [64, 32] and config.train.device == "auto"


def test_unknown_and_ill_typed_overrides_are_errors():
    config = load_preset("vae-mnist")
    with pytest.raises(ConfigError, match="unknown config key 'nonsense'"):
        apply_overrides(config, ["nonsense=1"])
    with pytest.raises(ConfigError, match="train.foo"):
        apply_overrides(config, ["train.foo=1"])
    with pytest.raises(ConfigError, match="bound.k must be int"):
        apply_overrides(config, ["bound.k=2.5"])
    with pytest.raises(ConfigError, match="ambiguous"):
        apply_overrides(config, ["batch_size=3"])  # train.batch_size and eval.batch_size
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(config, ["k"])


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="vae-mnist"):
        load_preset("vae-mnits")


def test_toml_round_trip():
    config = load_preset("iwae-mnist-k5")
    import tomllib

    assert from_dict(tomllib.loads(dump_toml(config))) == config
    with pytest.raises(ConfigError, match="unknown config key"):
        from_dict({"model": {"latent": 3}})
    assert isinstance(from_dict({}), Config)


def test_schedules():
    assert [iwae_lr(e, 1.0) for e in (0, 1, 3, 4, 12, 13)] == pytest.approx(
        [1.0, 10 ** (-1 / 7), 10 ** (-1 / 7), 10 ** (-2 / 7), 10 ** (-2 / 7), 10 ** (-3 / 7)]
    )
    assert iwae_lr(3279, 1.0) == pytest.approx(10 ** (-7 / 7)) and iwae_lr(10_000, 1.0) == pytest.approx(0.1)
    assert linear_anneal(0, 100, 4.0) == 0.0 and linear_anneal(50, 100, 4.0) == 2.0 and linear_anneal(500, 100, 4.0) == 4.0
    assert linear_anneal(10, 0, 4.0) == 4.0
    assert linear_anneal(150_000, 200_000, 1.0, cap=0.2) == 0.2
