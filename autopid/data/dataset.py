"""Reading a preprocessed cache entry and sampling a training mix from it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autopid._logging import get_logger
from autopid.errors import ConfigError, InputError
from autopid.features import Normaliser
from autopid.preprocess.cache import read_manifest

_log = get_logger(__name__)
SPLITS = ("train", "validation", "test")


class PreprocessedDataset:
    """A cache entry written by :func:`autopid.preprocess.preprocess`.

    Training code reads feature columns, ``run``/``event`` and MC truth only; the
    ``hidden_*`` truth of simulated Data is read by :meth:`evaluation_truth` alone.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest = read_manifest(self.path)
        if manifest is None:
            raise InputError(f"{self.path}: not a preprocessed cache entry (no manifest.json)")
        self.manifest: dict[str, Any] = manifest
        self.normaliser = Normaliser.from_dict(manifest["normalisation"])
        self.species: dict[str, list[int]] = manifest["species"]

    @property
    def columns(self) -> list[str]:
        return list(self.manifest["columns"])

    @property
    def auxiliary(self) -> list[str]:
        """Scalar branches stored next to the features (never model inputs)."""
        return list(self.manifest.get("auxiliary", []))

    @property
    def roles(self) -> dict[str, str]:
        """Role -> branch, as the dataset YAML maps them (empty for older caches)."""
        return dict(self.manifest.get("roles", {}))

    def role_columns(self, roles: Sequence[str] | None = None) -> dict[str, str]:
        """Role -> stored column for ``roles`` (default: every mapped role).

        An unmapped role is a ConfigError that names the dataset, the role and the mapped
        roles: the caller decides whether to skip what needs it.
        """
        mapped = self.roles
        wanted = list(mapped) if roles is None else list(roles)
        missing = [r for r in wanted if r not in mapped]
        if missing:
            raise ConfigError(
                f"dataset {self.manifest.get('dataset')!r}: role {missing[0]!r} is not mapped to a branch "
                f"(add it under 'roles' in the dataset YAML); mapped roles: {', '.join(sorted(mapped)) or 'none'}")
        features = self.manifest.get("features", {})
        for r in wanted:
            shape = features.get(mapped[r], {}).get("shape")
            if shape:
                raise ConfigError(f"dataset {self.manifest.get('dataset')!r}: role {r!r} maps to {mapped[r]!r}, "
                                  f"an array branch of shape {tuple(shape)}; a role needs a scalar branch")
        return {r: mapped[r] for r in wanted}

    def role_frame(self, split: str, domain: str, roles: Sequence[str] | None = None) -> pd.DataFrame:
        """Columns named by role with physical values (no transform, no normalisation), in
        the row order of :meth:`frame` for the same split and domain."""
        cols = self.role_columns(roles)
        branches = list(dict.fromkeys(cols.values()))
        raw = self.frame(split, domain, branches)
        return pd.DataFrame({role: raw[branch].to_numpy() for role, branch in cols.items()})

    def feature_columns(self, branch: str) -> list[str]:
        return list(self.manifest["features"][branch]["columns"])

    def feature_shape(self, branch: str) -> tuple[int, ...]:
        return tuple(self.manifest["features"][branch]["shape"])

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")

    def frame(self, split: str, domain: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Rows of one split and domain; by default the features, run, event and MC truth."""
        self._check_split(split)
        entry = self.manifest["splits"][split].get(domain)
        if columns is None:
            columns = ["run", "event", *self.columns] + (["truth_label"] if domain == "mc" else [])
        if not entry:
            return pd.DataFrame({c: pd.Series(dtype="float32") for c in columns})
        parts = [pd.read_parquet(self.path / "shards" / rel, columns=list(columns)) for rel in entry["shards"]]
        return pd.concat(parts, ignore_index=True)

    def evaluation_truth(self, split: str, domain: str = "data") -> pd.DataFrame:
        """Hidden truth of simulated Data (or MC truth): for evaluation, never for training."""
        self._check_split(split)
        entry = self.manifest["splits"][split].get(domain)
        if not entry:
            return pd.DataFrame()
        parts = []
        for rel in entry["shards"]:
            path = self.path / "shards" / rel
            import pyarrow.parquet as pq

            names = [n for n in pq.read_schema(path).names if n.startswith(("hidden_", "truth_")) or n in ("run", "event")]
            parts.append(pd.read_parquet(path, columns=names))
        return pd.concat(parts, ignore_index=True)

    def species_codes(self, name: str) -> list[int]:
        if name not in self.species:
            raise ConfigError(
                f"unknown species {name!r}; this dataset defines: {', '.join(sorted(self.species))}"
            )
        return self.species[name]

    def label_species(self, truth: np.ndarray) -> np.ndarray:
        """Species name per row ('other' when no species claims the truth value)."""
        out = np.full(truth.shape, "other", dtype=object)
        for name, codes in self.species.items():
            out[np.isin(truth, codes)] = name
        return out


def sample_mc(
    ds: PreprocessedDataset,
    split: str,
    signal: str,
    *,
    signal_fraction: float | None = None,
    background_mix: Mapping[str, float] | None = None,
    max_rows: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """MC rows for a one-vs-all model of ``signal``, with a ``y`` column (1 signal, 0 background).

    The mix is applied here, when sampling from the cache, so a search can change it per
    trial without preprocessing again. ``background_mix`` gives the fraction of each
    named background species among the background: species left out keep their natural
    share of the background and the named ones share the rest in the given proportions
    (normalised); a fraction of 0 drops a species. (Dropping the species left out, as
    before, silently removed silicon from AMS phosphorus training, a quarter of the Data
    background.) ``signal_fraction`` is the fraction of signal. ``None`` keeps the natural
    composition. The largest sample that honours the fractions without repeating rows
    is drawn (then cut to ``max_rows``).
    """
    ds.species_codes(signal)
    frame = ds.frame(split, "mc")
    rng = np.random.default_rng(seed)
    species = ds.label_species(frame["truth_label"].to_numpy())
    is_sig = species == signal
    groups: dict[str, np.ndarray] = {"__signal__": np.flatnonzero(is_sig)}
    if background_mix is None:
        groups["__background__"] = np.flatnonzero(~is_sig)
        weights = {"__background__": 1.0}
    else:
        weights = {}
        for name, w in background_mix.items():
            if name != "other":
                ds.species_codes(name)
            if name == signal:
                raise ConfigError(f"background_mix: {name!r} is the signal species")
            if w < 0:
                raise ConfigError(f"background_mix: fraction of {name!r} is negative")
            rows = np.flatnonzero(species == name)
            if w > 0 and len(rows) == 0:
                _log.warning("background_mix: no %s rows in the %s split; dropping it from the mix", name, split)
            elif w > 0:
                groups[name] = rows
                weights[name] = float(w)
        if not weights:
            raise InputError(f"{ds.path}: background_mix: no background species with rows and a positive fraction "
                             f"in the {split} split")
        # the species not named keep their natural share of the background
        rest = [n for n in np.unique(species[~is_sig]) if n not in background_mix]
        n_bkg = int((~is_sig).sum())
        kept = {n: float((species == n).sum()) / n_bkg for n in rest}
        named = sum(weights.values())
        weights = {k: (1.0 - sum(kept.values())) * w / named for k, w in weights.items()}
        for name, share in kept.items():
            groups[name] = np.flatnonzero(species == name)
            weights[name] = share
    total_w = sum(weights.values())
    n_sig_avail = len(groups["__signal__"])
    n_bkg_avail = sum(len(groups[k]) for k in weights)
    f_sig = n_sig_avail / max(n_sig_avail + n_bkg_avail, 1) if signal_fraction is None else signal_fraction
    if not 0.0 < f_sig < 1.0:
        raise ConfigError(f"signal_fraction must be in (0, 1), got {f_sig}")
    # largest total n with n*f_sig <= n_sig and n*(1-f_sig)*w_k <= n_k for every background
    limits = [n_sig_avail / f_sig] + [len(groups[k]) / ((1 - f_sig) * w / total_w) for k, w in weights.items()]
    n = int(min(limits))
    if max_rows is not None:
        n = min(n, max_rows)
    if n == 0:
        raise InputError(f"{ds.path}: no {signal} or background rows in the {split} split to sample")
    picks = [rng.choice(groups["__signal__"], size=int(round(n * f_sig)), replace=False)]
    for k, w in weights.items():
        size = min(len(groups[k]), int(round(n * (1 - f_sig) * w / total_w)))
        picks.append(rng.choice(groups[k], size=size, replace=False))
    idx = rng.permutation(np.concatenate(picks))
    out = frame.iloc[idx].reset_index(drop=True)
    out["y"] = (species[idx] == signal).astype(np.float32)
    out["domain"] = np.float32(0.0)
    return out


def sample_data(ds: PreprocessedDataset, split: str, *, max_rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Unlabelled Data rows (``y`` is NaN): the target domain for domain adaptation."""
    frame = ds.frame(split, "data")
    if max_rows is not None and len(frame) > max_rows:
        idx = np.random.default_rng(seed).choice(len(frame), size=max_rows, replace=False)
        frame = frame.iloc[np.sort(idx)].reset_index(drop=True)
    frame["y"] = np.float32(np.nan)
    frame["domain"] = np.float32(1.0)
    return frame
