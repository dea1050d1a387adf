"""A versioned model registry on the local filesystem, with run-range validity.

Layout::

    ROOT/<experiment>/<species>/v0001/     one published version (never overwritten)
        model.onnx, columns_for_training.json, scaling_params.json, thresholds.json,
        preprocessing.json, export.json, model.pt
        metadata.json                      provenance, validity, metrics, sha256 of every file
        metadata.json.sha256               sha256 of metadata.json
        revoked.json                       only once revoked (the version is kept)
    ROOT/<experiment>/<species>/.staging-*/  a publish in progress (or killed): never read

ROOT is ``$AUTOPID_REGISTRY`` or ``./registry``. Only local paths are supported (a
``file://`` URL is accepted); other fsspec URLs are refused, because publishing relies
on an atomic, exclusive directory rename that object stores do not offer.

Publishing is atomic: the files are copied into a hidden staging directory next to the
version directories, fsynced, and the staging directory is renamed to ``v<N+1>``. The
final step (choosing N, writing the metadata, the rename) runs under an exclusive
``flock`` on ``<species>/.publish.lock``, which the kernel releases when the holder dies,
so concurrent publishers get consecutive versions; the rename also fails if that version
exists, so a version is never overwritten, and a reader sees either no new version or a
complete one, even if the publisher is killed mid-write.

Published once: a publish may carry a ``once_key`` (the retraining uses
``retrain:<job>:<period>``). It is recorded in the metadata (``publish_key``) and checked
under the same lock, just before the rename: if a version with that key exists, the
publish raises :class:`AlreadyPublished` naming it and nothing is written. The check and
the rename are one step for every other publisher, whatever the timing.

Validity extensions (the conditions-database way to say "this model also serves these
runs"): :meth:`Registry.extend` publishes the files of an existing version again as a new
version with a new run range and ``model_of`` naming the version whose trained model it
is. The latest upload wins; nothing earlier is changed.

Nothing left behind: staging directories (and the export directories of
:func:`autopid.publish.publisher.publish_model` under ``ROOT/.tmp/``) carry their owner's
host, pid and process start time in their name; any registry operation removes those
whose owner process is gone (same host), at once. Directories of another host, or of an
older format, are removed once older than 24 h.

Lookup by run follows the conditions-database rule: among the versions that are not
revoked and whose run range covers the run, the latest upload (highest version) wins.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import shutil
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autopid._logging import get_logger
from autopid.errors import AutopidError, ConfigError, InputError
from autopid.file_lock import FileLock, LockHeld
from autopid.owned_dirs import (  # noqa: F401 - re-exported: the registry's users import them from here
    STALE_STAGING_S,
    host_name,
    make_owned_dir,
    owner_gone,
    owner_tag,
    remove_stale_dirs,
)
from autopid.provenance import atomic_write_text, sha256_file
from autopid.publish.names import ModelId, check_name, parse_model_id, parse_version_dir, version_dir

_log = get_logger(__name__)

ENV = "AUTOPID_REGISTRY"
METADATA_FILE = "metadata.json"
METADATA_SUM_FILE = "metadata.json.sha256"
REVOKED_FILE = "revoked.json"
STAGING_PREFIX = ".staging-"
TMP_DIR = ".tmp"  # export directories of publish_model: ROOT/.tmp/export-<owner>
EXPORT_PREFIX = "export-"
LOCK_FILE = ".publish.lock"
REGISTRY_FORMAT = 1
LOCK_TIMEOUT_S = 600.0


# directories that name their owner: see autopid.owned_dirs


def default_registry_root() -> Path:
    """``$AUTOPID_REGISTRY``, else ``./registry``."""
    return Path(os.environ.get(ENV) or "registry")


def _local_root(root: str | Path | None) -> Path:
    if root is None:
        return default_registry_root()
    text = str(root)
    if text.startswith("file://"):
        return Path(text[len("file://"):])
    if "://" in text:
        raise ConfigError(f"registry {text!r}: only local paths (or file:// URLs) are supported; publishing needs "
                          "an atomic, exclusive rename")
    return Path(text).expanduser()


def _is_name(name: str) -> bool:
    try:
        check_name(name, "name")
    except ConfigError:
        return False
    return True


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def copy_file(src: Path, dst: Path) -> None:
    """Copy one file into a staging directory and fsync it."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
        fout.flush()
        os.fsync(fout.fileno())


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def check_validity(validity: Mapping[str, Any]) -> dict[str, Any]:
    """``{"runs": [first, last], "periods": [...]}`` with checked names and numbers."""
    try:
        first, last = (int(r) for r in validity["runs"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"validity: expected runs [first, last], got {validity!r}") from exc
    if first < 0 or last < first:
        raise ConfigError(f"validity: run range [{first}, {last}] is empty or negative")
    periods = [check_name(str(p), "period") for p in validity.get("periods", [])]
    return {"runs": [first, last], "periods": periods}


@dataclass
class ModelVersion:
    """One published version: its directory, metadata and revocation marker."""

    id: ModelId
    path: Path
    metadata: dict[str, Any]
    revoked: dict[str, Any] | None = None

    @classmethod
    def load(cls, path: str | Path) -> ModelVersion:
        path = Path(path)
        meta_path = path / METADATA_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InputError(f"{meta_path}: missing; {path} is not a published model version") from exc
        except (OSError, ValueError) as exc:
            raise InputError(f"{meta_path}: unreadable ({type(exc).__name__}: {exc}); the version is corrupted") from exc
        try:
            mid = parse_model_id(str(meta["id"]))
        except (KeyError, ConfigError) as exc:
            raise InputError(f"{meta_path}: no valid model id ({exc})") from exc
        revoked = None
        rpath = path / REVOKED_FILE
        if rpath.exists():
            try:
                revoked = json.loads(rpath.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                revoked = {"revoked": "unknown", "reason": f"{REVOKED_FILE} unreadable"}
        return cls(mid, path, meta, revoked)

    @property
    def runs(self) -> tuple[int, int]:
        first, last = self.metadata["validity"]["runs"]
        return int(first), int(last)

    @property
    def periods(self) -> list[str]:
        return list(self.metadata["validity"].get("periods", []))

    def covers(self, run: int) -> bool:
        first, last = self.runs
        return first <= run <= last

    @property
    def model_of(self) -> str:
        """The version whose trained model this is: itself, or for a validity extension
        the version it extends (followed to the one that was trained)."""
        return str(self.metadata.get("model_of") or self.id)

    @property
    def is_extension(self) -> bool:
        return bool(self.metadata.get("model_of"))

    def explain(self) -> str:
        """Why this version exists, in one line (a promotion, a kept model, by hand)."""
        info = self.metadata.get("retrain") or {}
        ext = self.metadata.get("extension") or {}
        if self.is_extension:
            why = ext.get("reason") or "validity extended"
            return f"the model of {self.model_of}, validity extended: {why}"
        if info:
            return f"promoted by retraining {info.get('job')}/{info.get('period')}"
        return "published by hand"

    def verify(self) -> None:
        """Check the sha256 of ``metadata.json`` and of every file it lists; refuse a
        corrupted or missing file with an error naming it."""
        meta_path = self.path / METADATA_FILE
        sum_path = self.path / METADATA_SUM_FILE
        try:
            expected_meta = sum_path.read_text(encoding="utf-8").split()[0]
        except (OSError, IndexError) as exc:
            raise InputError(f"{sum_path}: missing or empty; cannot check {meta_path} ({self.id} refused)") from exc
        found = sha256_file(meta_path)
        if found != expected_meta:
            raise InputError(f"{meta_path}: sha256 {found[:12]}... does not match the recorded "
                             f"{expected_meta[:12]}...; the file is corrupted ({self.id} refused)")
        for name, digest in sorted(self.metadata.get("files", {}).items()):
            path = self.path / name
            if not path.is_file():
                raise InputError(f"{path}: missing from published version {self.id} (refused)")
            found = sha256_file(path)
            if found != digest:
                raise InputError(f"{path}: sha256 {found[:12]}... does not match the recorded {digest[:12]}...; "
                                 f"the file is corrupted ({self.id} refused)")

    def summary(self) -> str:
        first, last = self.runs
        m = self.metadata
        status = "REVOKED" if self.revoked else "active"
        periods = ",".join(self.periods) or "-"
        extends = f"  (model of {self.model_of})" if self.is_extension else ""
        return (f"{str(self.id):<28} {m.get('family', '?'):<4} runs {first}-{last} ({periods})  "
                f"{m.get('created', '?')[:19]}  {status}{extends}")


class AlreadyPublished(AutopidError):
    """A version with this ``once_key`` exists: nothing was published."""

    def __init__(self, key: str, version: ModelVersion) -> None:
        super().__init__(f"{version.id} was already published for {key}; not published again")
        self.key = key
        self.version = version


class Registry:
    """The registry under ``root`` (default: ``$AUTOPID_REGISTRY`` or ``./registry``)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = _local_root(root)
        self._cleaned = False

    def clean_stale(self, *, force: bool = False) -> list[Path]:
        """Remove staging and export directories whose owner process is gone (once per
        instance unless ``force``); returns what was removed."""
        if self._cleaned and not force:
            return []
        self._cleaned = True
        removed = remove_stale_dirs(self.root / TMP_DIR, (EXPORT_PREFIX,))
        for exp, sp in self._pairs(None, None):
            removed += remove_stale_dirs(self.root / exp / sp, (STAGING_PREFIX,))
        return removed

    def export_dir(self) -> Path:
        """A new private directory under ``ROOT/.tmp`` for an export before publishing."""
        self.clean_stale()
        return make_owned_dir(self.root / TMP_DIR, EXPORT_PREFIX)

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # -- paths ---------------------------------------------------------------------------
    def species_dir(self, experiment: str, species: str) -> Path:
        path = self.root / check_name(experiment, "experiment") / check_name(species, "species")
        root = self.root.resolve()
        if root not in path.resolve().parents:  # names are checked; this guards symlinks too
            raise ConfigError(f"{path}: resolves outside the registry root {root}")
        return path

    def version_path(self, mid: ModelId) -> Path:
        return self.species_dir(mid.experiment, mid.species) / version_dir(mid.version)

    # -- reading -------------------------------------------------------------------------
    def _version_numbers(self, sdir: Path) -> list[int]:
        if not sdir.is_dir():
            return []
        return sorted(n for p in sdir.iterdir() if (n := parse_version_dir(p.name)) is not None and p.is_dir())

    def _pairs(self, experiment: str | None, species: str | None) -> list[tuple[str, str]]:
        if not self.root.is_dir():
            return []
        exps = [check_name(experiment, "experiment")] if experiment else sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and _is_name(p.name))
        out = []
        for exp in exps:
            edir = self.root / exp
            if not edir.is_dir():
                continue
            names = [check_name(species, "species")] if species else sorted(
                p.name for p in edir.iterdir() if p.is_dir() and _is_name(p.name))
            out += [(exp, s) for s in names if (edir / s).is_dir()]
        return out

    def versions(self, experiment: str | None = None, species: str | None = None, *,
                 strict: bool = False) -> list[ModelVersion]:
        """Every published version (revoked ones included), oldest first per species.
        An unreadable version is skipped with a warning, or refused when ``strict``."""
        self.clean_stale()
        out = []
        for exp, sp in self._pairs(experiment, species):
            sdir = self.species_dir(exp, sp)
            for n in self._version_numbers(sdir):
                try:
                    out.append(ModelVersion.load(sdir / version_dir(n)))
                except InputError as exc:
                    # a revoked version serves no run, readable or not: it cannot block the others
                    if strict and not (sdir / version_dir(n) / REVOKED_FILE).is_file():
                        raise InputError(f"{exc}; if this version is broken, revoke it "
                                         f"(autopid models revoke {exp}/{sp}/{version_dir(n)})") from None
                    _log.warning("skipping %s/%s/%s: %s", exp, sp, version_dir(n), exc)
        return out

    def get(self, model_id: str | ModelId, *, verify: bool = True) -> ModelVersion:
        """The version ``experiment/species/vNNNN``, checked against its sha256 sums."""
        mid = model_id if isinstance(model_id, ModelId) else parse_model_id(str(model_id))
        self.clean_stale()
        path = self.version_path(mid)
        if not path.is_dir():
            raise ConfigError(f"model {mid}: not in the registry {self.root}")
        version = ModelVersion.load(path)
        if version.id != mid:
            raise InputError(f"{path / METADATA_FILE}: records id {version.id}, expected {mid}")
        if verify:
            version.verify()
        return version

    def resolve(self, species: str, run: int, experiment: str | None = None, *, verify: bool = True) -> ModelVersion:
        """The newest non-revoked version of ``species`` whose validity covers ``run``."""
        check_name(species, "species")
        exps = sorted({e for e, _ in self._pairs(experiment, species)})
        if experiment is None and len(exps) > 1:
            raise ConfigError(f"species {species!r} is published for several experiments ({', '.join(exps)}); "
                              "name the experiment")
        versions = self.versions(experiment, species, strict=True)
        live = [v for v in versions if v.revoked is None and v.covers(int(run))]
        if not live:
            where = f"{experiment or (exps[0] if exps else '?')}/{species}"
            known = "; ".join(f"{v.id.version:04d}: runs {v.runs[0]}-{v.runs[1]}{' (revoked)' if v.revoked else ''}"
                              for v in versions) or "none published"
            raise AutopidError(f"no model for species {species!r} covers run {run} in {self.root} "
                               f"(versions of {where}: {known})")
        best = max(live, key=lambda v: v.id.version)
        if verify:
            best.verify()
        return best

    # -- writing -------------------------------------------------------------------------
    def revoke(self, model_id: str | ModelId, reason: str = "") -> ModelVersion | None:
        """Mark a version revoked (``revoked.json``); it is kept but no longer resolved.
        A version whose metadata cannot be read is revoked too (None is returned): that
        is how a broken version stops blocking the species' other versions."""
        mid = model_id if isinstance(model_id, ModelId) else parse_model_id(str(model_id))
        try:
            version: ModelVersion | None = self.get(mid, verify=False)
        except InputError as exc:
            version, path = None, self.version_path(mid)
            if (path / REVOKED_FILE).is_file():
                raise ConfigError(f"model {mid} is already revoked") from None
            reason = f"{reason} (metadata unreadable: {exc})".strip()
        else:
            path = version.path
            if version.revoked is not None:
                raise ConfigError(f"model {version.id} is already revoked ({version.revoked.get('revoked')})")
        marker = {"revoked": _now(), "reason": reason, "user": os.environ.get("USER", "")}
        atomic_write_text(path / REVOKED_FILE, json.dumps(marker, indent=1) + "\n")
        _fsync_dir(path)
        return ModelVersion.load(path) if version is not None else None

    def _replaces(self, sdir: Path, runs: list[int]) -> str | None:
        """The newest non-revoked version whose validity overlaps ``runs``."""
        best = None
        for n in self._version_numbers(sdir):
            try:
                v = ModelVersion.load(sdir / version_dir(n))
            except InputError:
                continue
            first, last = v.runs
            if v.revoked is None and first <= runs[1] and runs[0] <= last:
                best = str(v.id)
        return best

    @contextlib.contextmanager
    def _locked(self, sdir: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
        """The species' publish lock (an exclusive ``flock``, dropped by the kernel if the
        holder dies): the final step of every publish runs under it."""
        try:
            lock = FileLock(sdir / LOCK_FILE, timeout_s).acquire()
        except LockHeld as exc:
            raise AutopidError(f"{exc.path}: held by another publisher for more than {timeout_s:.0f} s "
                               f"({exc.holder}); nothing was published") from None
        try:
            yield
        finally:
            lock.release()

    def _with_key(self, sdir: Path, key: str) -> ModelVersion | None:
        for n in reversed(self._version_numbers(sdir)):
            try:
                v = ModelVersion.load(sdir / version_dir(n))
            except InputError:
                continue
            if v.metadata.get("publish_key") == key:
                return v
        return None

    def published_for(self, experiment: str, species: str, key: str) -> ModelVersion | None:
        """The version published with ``once_key == key``, if any (revoked ones too)."""
        return self._with_key(self.species_dir(experiment, species), key)

    def publish(self, source_dir: str | Path, metadata: Mapping[str, Any], *, once_key: str | None = None,
                max_attempts: int = 100) -> ModelVersion:
        """Publish the files of ``source_dir`` as the next version (see the module docstring).

        ``metadata`` must hold ``experiment``, ``species`` and ``validity``
        (``{"runs": [first, last], "periods": [...]}``); the registry adds ``id``,
        ``version``, ``created``, ``replaces``, ``publish_key`` and the sha256 of every file.
        With ``once_key``, raises :class:`AlreadyPublished` if a version with that key
        exists, checked atomically with the rename.
        """
        src = Path(source_dir)
        try:
            experiment, species = str(metadata["experiment"]), str(metadata["species"])
            validity = check_validity(metadata["validity"])
        except KeyError as exc:
            raise ConfigError(f"metadata: {exc.args[0]!r} is required to publish") from exc
        if once_key is not None and (not isinstance(once_key, str) or not once_key.strip()):
            raise ConfigError(f"once_key {once_key!r}: expected a non-empty string")
        sdir = self.species_dir(experiment, species)
        files = sorted(p for p in src.iterdir() if p.is_file() and not p.name.startswith("."))
        reserved = {METADATA_FILE, METADATA_SUM_FILE, REVOKED_FILE}
        files = [p for p in files if p.name not in reserved]
        if not files:
            raise InputError(f"{src}: no files to publish")
        sdir.mkdir(parents=True, exist_ok=True)
        self.clean_stale()
        if once_key is not None and (done := self._with_key(sdir, once_key)) is not None:
            raise AlreadyPublished(once_key, done)  # early: no copy needed
        staging = make_owned_dir(sdir, STAGING_PREFIX)
        try:
            sums = {}
            for p in files:
                copy_file(p, staging / p.name)
                sums[p.name] = sha256_file(staging / p.name)
            with self._locked(sdir):
                if once_key is not None and (done := self._with_key(sdir, once_key)) is not None:
                    raise AlreadyPublished(once_key, done)
                n = 0
                for _ in range(max_attempts):
                    n = max(n, max(self._version_numbers(sdir), default=0)) + 1
                    target = sdir / version_dir(n)
                    if os.path.lexists(target):
                        continue
                    mid = ModelId(experiment, species, n)
                    meta = {**dict(metadata), "format": REGISTRY_FORMAT, "id": str(mid), "experiment": experiment,
                            "species": species, "version": n, "validity": validity, "created": _now(),
                            "replaces": self._replaces(sdir, validity["runs"]), "files": sums}
                    if once_key is not None:
                        meta["publish_key"] = once_key
                    text = json.dumps(meta, indent=1, sort_keys=True, allow_nan=False) + "\n"
                    _write_synced(staging / METADATA_FILE, text.encode())
                    _write_synced(staging / METADATA_SUM_FILE,
                                  f"{sha256_file(staging / METADATA_FILE)}  {METADATA_FILE}\n".encode())
                    _fsync_dir(staging)
                    try:
                        os.rename(staging, target)
                    except OSError as exc:
                        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) or os.path.lexists(target):
                            continue  # a publisher outside the lock took this version: try the next
                        raise
                    _fsync_dir(sdir)
                    return ModelVersion.load(target)
            raise AutopidError(f"{sdir}: could not claim a new version after {max_attempts} attempts "
                               "(other publishers kept taking them); nothing was published")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def extend(self, model_id: str | ModelId | ModelVersion, validity: Mapping[str, Any], *, reason: str,
               extra_metadata: Mapping[str, Any] | None = None, once_key: str | None = None) -> ModelVersion:
        """Publish the model of ``model_id`` again as a new version valid for ``validity``
        (a validity extension, CCDB style: the latest upload wins, history is kept).

        The files are copied from the (verified) version; its metadata is kept, except its
        validity, its ``retrain`` section and what the registry sets, with ``model_of`` (the
        version that was trained) and ``extension`` (the version extended, the reason)."""
        src = model_id if isinstance(model_id, ModelVersion) else self.get(model_id)
        src.verify()
        dropped = {"id", "version", "created", "replaces", "files", "format", "validity", "publish_key", "retrain",
                   "extension", "model_of"}
        meta = {k: v for k, v in src.metadata.items() if k not in dropped}
        meta.update({"validity": dict(validity), "model_of": src.model_of,
                     "extension": {"of": str(src.id), "reason": reason, "created": _now(),
                                   "host": host_name(), "user": os.environ.get("USER", "")},
                     **dict(extra_metadata or {})})
        return self.publish(src.path, meta, once_key=once_key)

