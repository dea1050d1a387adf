from __future__ import annotations

from pathlib import Path

import pytest

from autopid.config import DatasetConfig, load_dataset_config, load_yaml_config
from autopid.config.dataset import BUILTIN_DATASETS
from autopid.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_builtin_datasets_load(name: str) -> None:
    cfg = load_dataset_config(name)
    assert cfg.name == name and cfg.targets


def test_unknown_key_names_file_path_and_alternatives(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\nfamily: fse\nsources:\n  - {domain: mc, files: [a.root], tree: t, treee: u}\n"
                  "features: [a]\ntruth: {label: {mc: pdg}}\nspecies: {pion: {truth: [211]}}\n")
    with pytest.raises(ConfigError) as err:
        load_dataset_config(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "sources[0].treee: unknown key" in msg
    assert "expected one of: domain, files, tree" in msg


def test_wrong_type_and_missing_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: x\nfamily: fse\nsources: []\nfeatures: a\nspecies: {}\nchunk_size: many\n")
    with pytest.raises(ConfigError) as err:
        load_dataset_config(path)
    msg = str(err.value)
    assert "features: Input should be a valid list" in msg
    assert "chunk_size:" in msg and "'many'" in msg
    assert "truth: required key is missing" in msg


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: file not found"):
        load_dataset_config(tmp_path / "nope.yaml")
    path = _write(tmp_path, "name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml:\d+: invalid YAML"):
        load_dataset_config(path)


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_dataset_config(path)


def test_cross_field_checks() -> None:
    base = load_dataset_config("alice").model_dump()
    with pytest.raises(ConfigError, match="unknown species 'deuteron'"):
        from autopid.config import validate_config

        validate_config({**base, "targets": ["deuteron"]}, DatasetConfig, source="x.yaml")
    bad_cut = {**base, "selection": [{"branch": "fP", "op": "between", "value": [2, 1]}]}
    with pytest.raises(ConfigError, match=r"selection\[0\].*low <= high"):
        validate_config(bad_cut, DatasetConfig, source="x.yaml")
    with pytest.raises(ConfigError, match="is not in features"):
        validate_config({**base, "required": ["fNope"]}, DatasetConfig, source="x.yaml")
    with pytest.raises(ConfigError, match="dataset 'alice': unknown species 'x'; defined: electron"):
        load_dataset_config("alice").species_of("x")


def test_simulator_config_override(tmp_path: Path) -> None:
    from autopid.simulate import AliceSimConfig

    default = AliceSimConfig()
    fields = list(AliceSimConfig.model_fields)
    assert fields, "the simulator must expose its parameters"
    path = _write(tmp_path, "bogus_parameter: 1\n")
    with pytest.raises(ConfigError, match="bogus_parameter: unknown key"):
        load_yaml_config(path, AliceSimConfig)
    path = _write(tmp_path, "{}\n")
    assert load_yaml_config(path, AliceSimConfig) == default
