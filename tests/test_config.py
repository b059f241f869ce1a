"""TOML + overrides -> nested dataclasses: coercion, unknown keys, validation errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from vidiff.config import ConfigError, config_from_dict, config_to_dict, load_config, parse_overrides


@dataclass
class Optim:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    steps: int = 10

    def __post_init__(self):
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass
class Model:
    kind: Literal["dit", "unet"] = "dit"
    depth: int = 2
    units: tuple[str, ...] = ()
    checkpoint: str | None = None


@dataclass
class Run:
    name: str = "run"
    bf16: bool = False
    optim: Optim = field(default_factory=Optim)
    model: Model = field(default_factory=Model)
    extras: dict[str, float] = field(default_factory=dict)


def _write(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_file_and_overrides_are_coerced_to_field_types(tmp_path):
    path = _write(tmp_path, 'name = "a"\n[optim]\nlr = 3\nbetas = [0.8, 0.95]\n[model]\nkind = "unet"\n')
    cfg = load_config(Run, path, ["optim.steps=200", "bf16=true", "model.depth=4", "model.units=Block,Attn",
                                  "model.checkpoint=none", "name=123", "optim.lr=2e-4", "extras.w=0.5"])
    assert cfg.optim.lr == 2e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.8, 0.95) and isinstance(cfg.optim.betas, tuple)
    assert cfg.optim.steps == 200 and cfg.bf16 is True
    assert cfg.model == Model(kind="unet", depth=4, units=("Block", "Attn"), checkpoint=None)
    assert cfg.name == "123"  # a str field keeps the text as typed
    assert cfg.extras == {"w": 0.5}
    assert config_from_dict(Run, config_to_dict(cfg)) == cfg
    from_file = load_config(Run, path)
    assert from_file.optim.lr == 3.0 and isinstance(from_file.optim.lr, float)  # TOML int -> float field


def test_unknown_key_is_named_with_its_path_and_file(tmp_path):
    path = _write(tmp_path, "[optim]\nlrr = 0.1\n")
    with pytest.raises(ConfigError, match=r"'optim\.lrr'.*run\.toml"):
        load_config(Run, path)
    with pytest.raises(ConfigError, match=r"'model\.dept'"):
        load_config(Run, None, ["model.dept=3"])
    with pytest.raises(ConfigError, match=r"'nope'"):
        load_config(Run, _write(tmp_path, "nope = 1\n"))


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("optim.steps=1.5", r"'optim\.steps'.*integer"),
        ("bf16=maybe", r"'bf16'.*true or false"),
        ("model.kind=gan", r"'model\.kind'.*one of 'dit', 'unet'"),
        ("optim.betas=[0.9]", r"'optim\.betas'.*2 values"),
        ("optim.lr=-1", r"invalid config \[optim\].*lr must be > 0"),
        ("optim=3", r"'optim'.*table"),
    ],
)
def test_bad_values_name_key(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(Run, None, [override])


def test_bad_toml_and_missing_file_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="run.toml.*not valid TOML"):
        load_config(Run, _write(tmp_path, "name = \n"))
    with pytest.raises(ConfigError, match="missing.toml does not exist"):
        load_config(Run, tmp_path / "missing.toml")


def test_override_syntax():
    assert parse_overrides(["a.b.c=1", "a.d= x "]) == {"a": {"b": {"c": "1"}, "d": "x"}}
    for bad in ["a.b", "=1", "a..b=1"]:
        with pytest.raises(ConfigError, match="key.sub=value"):
            parse_overrides([bad])


def test_train_config_maps_from_toml(tmp_path):
    from vidiff.train import TrainConfig

    cfg = load_config(TrainConfig, _write(tmp_path, 'steps = 5\nprecision = "fp32"\nbetas = [0.9, 0.95]\n'),
                      ["distributed=ddp", "fsdp_units=DiTBlock"])
    assert cfg.steps == 5 and cfg.betas == (0.9, 0.95) and cfg.distributed == "ddp" and cfg.fsdp_units == ("DiTBlock",)
    with pytest.raises(ConfigError, match="grad_accum must be >= 1"):
        load_config(TrainConfig, None, ["grad_accum=0"])
