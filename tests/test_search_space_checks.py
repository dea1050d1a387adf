"""Spaces that tune only what acts, and output options before or after the command."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from autopid.errors import ConfigError
from autopid.search.space import load_search_space, validate_against_data

ROOT = Path(__file__).resolve().parents[1]


def _mda_space(tmp_path: Path, params: dict, branches: list[str] | None = None) -> Path:
    data = yaml.safe_load((ROOT / "search_spaces" / "mda.yaml").read_text())
    data["params"] = params
    if branches is not None:
        data["base"]["model"]["params"]["branches"] = branches
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("key", "branches", "message"), [
    ("model.params.gnn_hidden", ["cnn", "rigidity", "tof"], "shapes the gnn branch"),
    ("model.params.cnn_channels", ["gnn", "rigidity", "tof"], "shapes the cnn branch"),
    ("model.params.mlp_hidden", ["gnn", "cnn"], "shapes the rigidity/tof branch"),
])
def test_size_of_a_disabled_branch_is_refused(tmp_path: Path, key: str, branches: list[str], message: str) -> None:
    path = _mda_space(tmp_path, {key: {"type": "categorical", "choices": [16, 32]}}, branches)
    with pytest.raises(ConfigError, match=message) as err:
        load_search_space(path)
    assert f"params.{key}" in str(err.value) and str(path) in str(err.value)


def test_size_of_an_enabled_branch_is_accepted(tmp_path: Path) -> None:
    path = _mda_space(tmp_path, {"model.params.gnn_hidden": {"type": "categorical", "choices": [16, 32]}},
                      ["gnn", "tof"])
    assert "model.params.gnn_hidden" in load_search_space(path).params


def test_scaling_and_signal_in_background_mix_are_refused(tmp_path: Path) -> None:
    path = _mda_space(tmp_path, {"scaling.num_workers": {"type": "int", "low": 1, "high": 2}})
    with pytest.raises(ConfigError, match="trial resources are fixed"):
        load_search_space(path)
    path = _mda_space(tmp_path, {"training.background_mix.phosphorus": {"type": "uniform", "low": 0.1, "high": 0.5}})
    with pytest.raises(ConfigError, match="'phosphorus' is the signal species"):
        load_search_space(path)


def test_background_species_absent_from_training_split_is_refused(tmp_path: Path) -> None:
    space = load_search_space(ROOT / "search_spaces" / "mda.yaml")
    data = yaml.safe_load((ROOT / "search_spaces" / "mda.yaml").read_text())
    data["params"]["training.background_mix.silicon"] = {"type": "uniform", "low": 0.05, "high": 0.4}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    space = load_search_space(path)
    study = space.studies[0]
    manifest = {"species_counts": {"train": {"phosphorus": 40000, "sulfur": 30000, "chlorine": 7000,
                                             "silicon": 1, "other": 500}}}
    with pytest.raises(ConfigError, match=r"silicon.*has 1 silicon row\(s\) among 37501 background rows"):
        validate_against_data(space, study, manifest, where=str(path))
    manifest["species_counts"]["train"]["silicon"] = 5000
    validate_against_data(space, study, manifest, where=str(path))


def test_shipped_spaces_tune_only_what_acts() -> None:
    for path in (ROOT / "search_spaces").glob("*.yaml"):
        space = load_search_space(path)
        assert "training.background_mix.silicon" not in space.params, path


@pytest.mark.parametrize("argv", [
    ["-v", "search", "--space", "x.yaml"],
    ["search", "--space", "x.yaml", "-v"],
    ["-q", "--debug", "search", "--resume", "d"],
    ["search", "--resume", "d", "-q", "--debug"],
])
def test_output_options_before_or_after_the_command(argv: list[str]) -> None:
    from autopid.cli import _parser

    args = _parser().parse_args(argv)
    assert args.verbose == (1 if "-v" in argv else 0)
    assert args.quiet == ("-q" in argv) and args.debug == ("--debug" in argv)


def test_every_trial_is_scored_on_the_same_validation_rows(alice_ds) -> None:  # type: ignore[no-untyped-def]
    """Validation must not depend on what a trial tunes (signal fraction, background mix)."""
    from autopid.train import core
    from autopid.train.config import TrainingSpec

    a = core.load_frames(alice_ds, "proton", TrainingSpec(max_eval_rows=500, signal_fraction=0.2,
                                                          background_mix={"pion": 1.0}), with_data=True)
    b = core.load_frames(alice_ds, "proton", TrainingSpec(max_eval_rows=500, signal_fraction=0.5,
                                                          background_mix={"kaon": 0.5, "pion": 0.5}), with_data=True)
    assert not a.train[["run", "event"]].equals(b.train[["run", "event"]])  # training samples differ
    assert a.validation[["run", "event", "y"]].equals(b.validation[["run", "event", "y"]])
    assert a.validation_data[["run", "event"]].equals(b.validation_data[["run", "event"]])


def _fse_space(tmp_path: Path, params: dict) -> Path:
    data = yaml.safe_load((ROOT / "search_spaces" / "fse.yaml").read_text())
    data["params"] = params
    path = tmp_path / "fse.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("key", "dist", "message"), [
    # only the upper end is out of range: each end is checked, not the lower one alone
    ("training.signal_fraction", {"type": "uniform", "low": 0.3, "high": 1.5}, r"value 1\.5 does not fit"),
    ("model.params.dropout", {"type": "uniform", "low": 0.0, "high": 1.5}, r"value 1\.5: .*do not make a fse model: ValueError: dropout"),
    # the second choice: 3 heads cannot split the base's 32 channels
    ("model.params.num_heads", {"type": "categorical", "choices": [2, 3]}, r"value 3: .*divisible"),
    ("model.params.num_heads", {"type": "categorical", "choices": [2, "x"]}, r"value 'x': .*do not make a fse model"),
    ("model.params.num_layers", {"type": "int", "low": 0, "high": 4, "log": True}, r"log: true needs low >= 1"),
])
def test_every_value_of_a_range_must_make_a_trial(tmp_path: Path, key: str, dist: dict, message: str) -> None:
    path = _fse_space(tmp_path, {"training.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3}, key: dist})
    with pytest.raises(ConfigError, match=message) as err:
        load_search_space(path)
    assert key in str(err.value) and str(path) in str(err.value)
    assert "errors.pydantic.dev" not in str(err.value)


def test_model_params_of_the_base_are_checked(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "search_spaces" / "fse.yaml").read_text())
    data["base"]["model"]["params"]["num_hedas"] = 4
    path = tmp_path / "fse.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"base: model.params .*num_hedas"):
        load_search_space(path)


def test_model_values_are_judged_with_the_other_searched_values(tmp_path: Path) -> None:
    """3 heads cannot split the base's 32 channels, but every combination this space can
    draw is valid: the space loads. A value that fits no combination is refused."""
    heads = {"type": "categorical", "choices": [3, 6]}
    ok = {"model.params.num_heads": heads,
          "model.params.embed_channels": {"type": "categorical", "choices": [[128, 48], [128, 96]]}}
    assert set(load_search_space(_fse_space(tmp_path, ok)).params) == set(ok)
    bad = {**ok, "model.params.num_heads": {"type": "categorical", "choices": [3, 7]}}  # 7 splits none
    with pytest.raises(ConfigError, match=r"params.model.params.num_heads: the value 7: .*divisible"):
        load_search_space(_fse_space(tmp_path, bad))
    # an int range whose step does not reach its upper end: only reachable values count
    stepped = {"model.params.num_layers": {"type": "int", "low": 1, "high": 4, "step": 2}}
    assert load_search_space(_fse_space(tmp_path, stepped)).params
    empty = {"model.params.embed_channels": {"type": "categorical", "choices": [[128, 32], []]}}
    with pytest.raises(ConfigError, match=r"the value \[\]: .*do not make a fse model: IndexError"):
        load_search_space(_fse_space(tmp_path, empty))
