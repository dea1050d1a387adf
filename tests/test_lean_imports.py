"""Training and driving FSE must not load the MDA stack or the report/baseline libraries."""

from __future__ import annotations

import subprocess
import sys

import pytest

from autopid.data import PreprocessedDataset

HEAVY = ("torch_geometric", "sklearn", "xgboost", "matplotlib")


def assert_lean(statement: str) -> None:
    code = (f"{statement}; import sys; bad=[m for m in {HEAVY!r} if m in sys.modules]; "
            "assert not bad, bad; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]


def test_training_imports_are_lean() -> None:
    assert_lean("import autopid.train.fit, autopid.train.core, autopid.metrics")


def test_fse_training_names_are_lean() -> None:
    assert_lean("from autopid.data import FSEDataset, PreprocessedDataset, fse_dataloader; "
                 "from autopid.models import FSEAttention, dann_lambda; import autopid.train.core as c; "
                 "c.batches_per_epoch(10, 3)")


def test_fse_fit_stays_lean(alice_ds: PreprocessedDataset) -> None:
    """A whole (tiny) FSE fit, validation and domain classifier included."""
    cfg = {"dataset": "alice", "species": "pion", "model": {"family": "fse", "params": {"num_layers": 1}},
           "training": {"epochs": 1, "batch_size": 64, "max_train_rows": 300, "max_eval_rows": 200,
                        "lambda_max": 0.3}}
    assert_lean("import torch; torch.set_num_threads(1); "
                "from autopid.data import PreprocessedDataset; from autopid.train.config import TrainConfig; "
                "from autopid.train.fit import fit; "
                f"_, s = fit(TrainConfig.model_validate({cfg!r}), PreprocessedDataset({str(alice_ds.path)!r})); "
                "assert 0 <= s.history[-1]['domain_accuracy'] <= 1")


def test_search_runner_imports_are_lean() -> None:
    assert_lean("import autopid.search.runner")


def test_lazy_packages_still_export_everything() -> None:
    import autopid.data
    import autopid.models

    for pkg in (autopid.data, autopid.models):
        for name in pkg.__all__:
            assert getattr(pkg, name) is not None
        assert set(pkg.__all__) <= set(dir(pkg))
        with pytest.raises(AttributeError):
            pkg.no_such_name  # noqa: B018
    from autopid.data.mda import MDADataset
    from autopid.models.mda import MDA

    assert autopid.data.MDADataset is MDADataset and autopid.models.MDA is MDA
