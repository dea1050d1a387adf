from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autopid.cli import main

SUBCOMMANDS = ["simulate", "preprocess"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"usage: autopid {command}" in capsys.readouterr().out


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "lhcb", "--out", "x", "--period", "A"])
    assert exc.value.code == 2
    assert "invalid choice: 'lhcb'" in capsys.readouterr().err


def test_config_error_exits_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "sim.yaml"
    bad.write_text("not_a_parameter: 3\n")
    code = main(["simulate", "alice", "--out", str(tmp_path), "--period", "LHC26a", "--config", str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert "sim.yaml" in err and "not_a_parameter: unknown key" in err
    assert "Traceback" not in err
    assert main(["preprocess", "--data", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: file not found" in capsys.readouterr().err


def test_runtime_error_exits_1(tmp_path: Path, alice_cfg, capsys: pytest.CaptureFixture[str]) -> None:
    from autopid.testing import write_dataset_yaml

    sources = [s.model_copy(update={"files": [str(tmp_path / "gone" / "*.root")]}) for s in alice_cfg.sources]
    path = write_dataset_yaml(alice_cfg.model_copy(update={"sources": sources}), tmp_path / "d.yaml")
    assert main(["preprocess", "--data", str(path), "--cache-dir", str(tmp_path)]) == 1
    assert "no file matches" in capsys.readouterr().err


def test_simulate_then_preprocess_through_the_console_script(tmp_path: Path, alice_cfg) -> None:
    from autopid.testing import dataset_for, write_dataset_yaml

    exe = Path(sys.executable).with_name("autopid")
    run = subprocess.run(
        [str(exe), "simulate", "ams", "--out", str(tmp_path / "ams"), "--period", "P2026a",
         "--period", "P2026b", "--runs", "1", "--events-per-run", "3000", "--first-run", "1000"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    for period, first in (("P2026a", 1000), ("P2026b", 1001)):
        manifest = json.loads((tmp_path / "ams" / period / "period.json").read_text())
        assert manifest["runs"] == [first, first]
        assert {f["domain"] for f in manifest["files"]} == {"mc", "data"}
        assert (tmp_path / "ams" / period / "config.yaml").is_file()
    data = write_dataset_yaml(dataset_for("ams", tmp_path / "ams", selection=[]), tmp_path / "ams.yaml")
    run = subprocess.run(
        [str(exe), "preprocess", "--data", str(data), "--cache-dir", str(tmp_path / "cache"), "-q"],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "preprocessed" in run.stdout and str(tmp_path / "cache") in run.stdout
    again = subprocess.run(
        [str(exe), "preprocess", "--data", str(data), "--cache-dir", str(tmp_path / "cache"), "-q"],
        capture_output=True, text=True, timeout=300,
    )
    assert "cache hit" in again.stdout
