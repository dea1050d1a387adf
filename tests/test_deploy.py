"""The container image and cluster manifests in deploy/: no Kubernetes schema is available
offline, so these parse every file and check the fields autopid relies on, and that every
command a manifest runs is one the `autopid` CLI accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from autopid.cli import _parser

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
MOUNT = "/mnt/autopid"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(K8S.rglob("*.yaml")):
        for doc in _docs(path):
            if "kind" in doc and doc.get("apiVersion") != "kustomize.config.k8s.io/v1beta1":
                out[f"{path.relative_to(K8S)}:{doc['kind']}"] = doc
    return out


def _pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]
    if doc["kind"] == "RayJob":
        spec = spec["rayClusterSpec"]
    if doc["kind"] in ("RayCluster", "RayJob"):
        return [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    if doc["kind"] == "DaskCluster":
        return [spec["worker"]["spec"], spec["scheduler"]["spec"]]
    return []


def _cli_accepts(command: str | list[str], where: str) -> None:
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    assert argv[0] == "autopid", f"{where}: {argv}"
    try:
        args = _parser().parse_args(argv[1:])
    except SystemExit as exc:
        raise AssertionError(f"{where}: `autopid` refuses {argv[1:]}") from exc
    for name in ("space", "job", "data"):
        value = getattr(args, name, None)
        if value and not value.startswith("/"):
            assert (ROOT / value).exists(), f"{where}: {value} is not in the image"


def test_every_manifest_parses_and_names_its_kind() -> None:
    docs = _all()
    kinds = sorted(d["kind"] for d in docs.values())
    assert kinds == ["DaskCluster", "PersistentVolumeClaim", "RayCluster", "RayJob"], kinds
    for name, doc in docs.items():
        assert doc["metadata"]["name"], name
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), name


def test_ray_manifests_match_the_installed_ray_and_share_one_volume() -> None:
    claims = {d["metadata"]["name"] for d in _all().values() if d["kind"] == "PersistentVolumeClaim"}
    claim_modes = [d["spec"]["accessModes"] for d in _all().values() if d["kind"] == "PersistentVolumeClaim"]
    assert claim_modes == [["ReadWriteMany"]]  # every node writes checkpoints there
    ray_minor = ".".join(ray.__version__.split(".")[:2])
    for name, doc in _all().items():
        if doc["kind"] in ("RayCluster", "RayJob"):
            spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
            assert spec["rayVersion"].startswith(ray_minor), (name, spec["rayVersion"], ray.__version__)
            assert spec["authOptions"]["mode"] == "token", name
        pods = _pod_specs(doc)
        if doc["kind"] == "DaskCluster":
            pods = pods[:1]  # the scheduler reads no files; the workers do
        for pod in pods:
            vols = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
            assert set(vols.values()) <= claims, name
            for c in pod["containers"]:
                assert c["image"].split(":")[0] in ("autopid", "autopid-cuda"), (name, c["image"])
                mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
                assert mounts.get(MOUNT) in vols, (name, c["name"], mounts)


def test_gpu_worker_group_asks_for_gpus() -> None:
    cluster = _all()["raycluster.yaml:RayCluster"]
    gpu = next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    (container,) = gpu["template"]["spec"]["containers"]
    assert container["image"].startswith("autopid-cuda")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_job_entrypoints_are_commands_autopid_accepts() -> None:
    job = _all()["jobs/rayjob-search.yaml:RayJob"]
    _cli_accepts(job["spec"]["entrypoint"], "rayjob-search")
    assert f"--out {MOUNT}/" in job["spec"]["entrypoint"]  # results on the shared volume


def test_dask_cluster_runs_scheduler_and_workers_on_the_default_port() -> None:
    dask = _all()["dask-cluster.yaml:DaskCluster"]
    worker = dask["spec"]["worker"]["spec"]["containers"][0]["args"]
    scheduler = dask["spec"]["scheduler"]["spec"]["containers"][0]
    assert worker[:2] == ["dask", "worker"] and scheduler["args"][:2] == ["dask", "scheduler"]
    ports = {p["name"]: p["port"] for p in dask["spec"]["scheduler"]["service"]["ports"]}
    assert ports["tcp-comm"] == 8786


@pytest.mark.parametrize("kdir", [K8S, K8S / "jobs"])
def test_kustomizations_list_existing_files_and_every_image(kdir: Path) -> None:
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    for res in k["resources"] + k.get("configurations", []):
        assert (kdir / res).is_file(), res
    named = {i["name"] for i in k["images"]}
    used = {c["image"].split(":")[0] for r in k["resources"] for d in _docs(kdir / r) for p in _pod_specs(d)
            for c in p["containers"]}
    assert used <= named, used - named
    config = yaml.safe_load((kdir / "kustomizeconfig.yaml").read_text())
    paths = {(c["kind"], c["path"]) for c in config["images"]}
    for r in k["resources"]:
        for d in _docs(kdir / r):
            if d["kind"] in ("RayCluster", "RayJob", "DaskCluster"):
                assert any(kind == d["kind"] for kind, _ in paths), d["kind"]


def test_dockerfile_pins_what_ci_pins() -> None:
    text = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=rayproject/ray:(\S+)", text, re.M)
    assert base and base.group(1).startswith(ray.__version__.rsplit(".", 1)[0]), base
    torch_pin = re.search(r"^ARG TORCH_VERSION=(\S+)", text, re.M)
    assert torch_pin and f"torch=={torch_pin.group(1)}" in (ROOT / ".ci" / "run").read_text()
    for line in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.M):
        for src in line.split():
            assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd and yaml.safe_load(cmd.group(1))[0] == "autopid"
