"""Tests for videoalign.config: defaults < recipe < flags < --set; strict keys and types.

ARCHITECTURE rule 3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from videoalign.config import ConfigError, build_config, config_to_dict, load_recipe, parse_overrides
from videoalign.reward.settings import ScoringConfig as ScoreConfig


@dataclass
class DataSection:
    #: frames per second
    fps: float = 2.0
    #: folder of videos
    root: str = "videos"


@dataclass
class DemoConfig:
    #: steps to run
    steps: int = 10
    #: learning rate
    lr: float = 1e-4
    #: a name
    name: str = "demo"
    #: compute dtype
    dtype: Literal["float32", "bfloat16"] = "float32"
    #: optional seed
    seed: int | None = None
    #: on/off
    shuffle: bool = False
    #: list of dims
    dims: list[str] = field(default_factory=lambda: ["VQ", "MQ", "TA"])
    #: nested section
    data: DataSection = field(default_factory=DataSection)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")


# ---- precedence ----------------------------------------------------------------------------------


def test_defaults_only():
    cfg = build_config(DemoConfig)
    assert cfg == DemoConfig()
    assert isinstance(cfg.data, DataSection)


def test_precedence_defaults_recipe_flags_set(tmp_path):
    """Each layer overrides the one below it for the keys it sets and leaves the others alone."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps: 20\nlr: 0.5\nname: from-recipe\ndata:\n  fps: 4.0\n")
    flags = {"steps": 30, "name": "from-flags"}
    overrides = parse_overrides(["steps=40", "data.root=/clips"])
    cfg = build_config(DemoConfig, load_recipe(recipe), flags, overrides)
    assert cfg.steps == 40  # --set beats flags beats recipe
    assert cfg.name == "from-flags"  # flags beat recipe
    assert cfg.lr == 0.5  # recipe beats defaults
    assert cfg.data.fps == 4.0 and cfg.data.root == "/clips"  # nested: recipe and --set both apply
    assert cfg.dtype == "float32" and cfg.shuffle is False  # untouched defaults
    # and the order of layers is what decides it
    assert build_config(DemoConfig, overrides, flags, load_recipe(recipe)).steps == 20


def test_score_config_precedence(tmp_path):
    recipe = tmp_path / "score.yaml"
    recipe.write_text("model: tiny-random\nbatch_size: 2\ndtype: bfloat16\n")
    cfg = build_config(
        ScoreConfig, load_recipe(recipe), {"batch_size": 3}, parse_overrides(["dtype=float32"])
    )
    assert (cfg.model, cfg.batch_size, cfg.dtype) == ("tiny-random", 3, "float32")
    assert cfg.num_workers == ScoreConfig().num_workers
    assert config_to_dict(cfg)["batch_size"] == 3


def test_empty_recipe_is_empty_mapping(tmp_path):
    recipe = tmp_path / "empty.yaml"
    recipe.write_text("")
    assert load_recipe(recipe) == {}


@pytest.mark.parametrize("text, match", [("- a\n- b\n", "mapping"), ("a: [1,\n", "not valid YAML")])
def test_bad_recipe_is_a_config_error(tmp_path, text, match):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError, match=match) as err:
        load_recipe(recipe)
    assert str(recipe) in str(err.value)


def test_missing_recipe_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_recipe(tmp_path / "nope.yaml")


# ---- unknown keys and wrong types ----------------------------------------------------------------


def test_unknown_top_level_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'stpes'") as err:
        build_config(DemoConfig, {"stpes": 3})
    assert "steps" in str(err.value)  # lists the known keys


def test_unknown_dotted_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.fsp'"):
        build_config(DemoConfig, parse_overrides(["data.fsp=3"]))


def test_dotted_key_through_a_non_section_is_an_error():
    with pytest.raises(ConfigError, match=r"'steps\.x'.*not a section"):
        build_config(DemoConfig, {"steps.x": 1})


def test_unknown_score_key_is_named():
    with pytest.raises(ConfigError, match=r"'batchsize'"):
        build_config(ScoreConfig, parse_overrides(["batchsize=4"]))


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("steps", "many", r"'steps': expected an integer"),
        ("steps", 2.5, r"'steps': expected an integer"),
        ("steps", True, r"'steps': expected an integer"),
        ("lr", "fast", r"'lr': expected a number"),
        ("shuffle", "maybe", r"'shuffle': expected true or false"),
        ("name", ["a", "b"], r"'name': expected a string"),
        ("seed", "abc", r"'seed': expected an integer"),
        ("data.fps", "quick", r"'data\.fps': expected a number"),
        ("dims", 5, r"'dims': expected a list"),
    ],
)
def test_wrong_type_names_the_key(key, value, match):
    with pytest.raises(ConfigError, match=match):
        build_config(DemoConfig, {key: value})


def test_values_are_coerced_to_the_field_type():
    cfg = build_config(DemoConfig, {"steps": "7", "lr": 1, "shuffle": "yes", "seed": None, "dims": "VQ, TA"})
    assert cfg.steps == 7 and isinstance(cfg.lr, float) and cfg.shuffle is True and cfg.seed is None
    assert cfg.dims == ["VQ", "TA"]


def test_literal_choices():
    assert build_config(DemoConfig, {"dtype": "bfloat16"}).dtype == "bfloat16"
    with pytest.raises(ConfigError, match=r"'dtype': 'float64' is not one of 'float32', 'bfloat16'"):
        build_config(DemoConfig, {"dtype": "float64"})
    with pytest.raises(ConfigError, match=r"'dtype'.*'auto'"):
        build_config(ScoreConfig, {"dtype": "fp32"})


def test_scalar_for_a_section_is_an_error():
    with pytest.raises(ConfigError, match="data"):
        build_config(DemoConfig, {"data": 5})


@pytest.mark.parametrize("layer", [{"data": {"fsp": 1.0}}, {"data": {"fps": "quick"}}])
def test_nested_mapping_errors_name_the_dotted_key(layer):
    with pytest.raises(ConfigError, match=r"'data\.f"):
        build_config(DemoConfig, layer)


# ---- cross-field rules ---------------------------------------------------------------------------


def test_post_init_rule_becomes_a_config_error():
    with pytest.raises(ConfigError, match="steps must be at least 1"):
        build_config(DemoConfig, {"steps": 0})


@pytest.mark.parametrize(
    "layer, match",
    [
        ({"fps": 1.0, "num_frames": 8}, "fps and num_frames are exclusive"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_frames": 1}, "num_frames"),
        ({"fps": -1.0}, "fps must be positive"),
        ({"csv": "videos.csv"}, "--output"),
    ],
)
def test_score_config_rules(layer, match):
    from videoalign.commands.score import (
        ScoreConfig as ScoreCommandConfig,  # the csv/output rule is score's own
    )

    with pytest.raises(ConfigError, match=match):
        build_config(ScoreCommandConfig if "csv" in layer else ScoreConfig, layer)


def test_score_config_rule_sees_all_layers():
    """The cross-field rule runs once on the merged config, not per layer: fps from the recipe and num_frames
    from --set conflict; num_frames with fps reset to null is fine."""
    with pytest.raises(ConfigError, match="exclusive"):
        build_config(ScoreConfig, {"fps": 1.0}, parse_overrides(["num_frames=8"]))
    cfg = build_config(ScoreConfig, {"fps": 1.0}, parse_overrides(["num_frames=8", "fps=null"]))
    assert (cfg.fps, cfg.num_frames) == (None, 8)


# ---- --set parsing -------------------------------------------------------------------------------


def test_parse_overrides_values():
    got = parse_overrides(
        [
            "a=b",
            "n=3",
            "x=1.5",
            "flag=true",
            "none=null",
            "empty=",
            "lst=[x, y]",
            "data.fps=1.0",
            " spaced = v ",
            "eq=a=b",
        ]
    )
    assert got == {
        "a": "b",
        "n": 3,
        "x": 1.5,
        "flag": True,
        "none": None,
        "empty": None,
        "lst": ["x", "y"],
        "data.fps": 1.0,
        "spaced": "v",
        "eq": "a=b",
    }


def test_parse_overrides_keeps_unparseable_yaml_as_text():
    assert parse_overrides(["p=[unclosed"]) == {"p": "[unclosed"}


@pytest.mark.parametrize("item", ["novalue", "=3", " =3"])
def test_parse_overrides_needs_key_equals_value(item):
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides([item])


def test_parse_overrides_none():
    assert parse_overrides(None) == {}
