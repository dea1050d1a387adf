"""Readable tables: the decision log of the runs, and what serves now (the lineage)."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from autopid.publish.registry import Registry
from autopid.retrain.job import RetrainJob
from autopid.retrain.periods import scan_periods
from autopid.retrain.state import RunRow, StateStore


def _num(v: Any, fmt: str = ".4f") -> str:
    return "-" if v is None else format(float(v), fmt) if isinstance(v, (int, float)) else str(v)


def _when(t: float | None) -> str:
    return "-" if t is None else _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%m-%d %H:%M:%S")


def decision_table(rows: list[RunRow]) -> str:
    """One line per (job, period): status, attempts, the gate's numbers, the outcome."""
    head = (f"{'job':<18} {'period':<10} {'status':<9} {'try':>3} {'cand AUC':>9} {'serv AUC':>9} {'delta':>8} "
            f"{'cand gap':>9} {'serv gap':>9} {'seconds':>8}  {'serving before':<20} {'published':<20}")
    lines = [head, "-" * len(head)]
    for r in rows:
        d = r.decision or {}
        cm, sm = d.get("candidate_metrics") or {}, d.get("serving_metrics") or {}
        secs = sum(v for v in r.timings.values() if isinstance(v, (int, float))) if r.timings else None
        lines.append(f"{r.job:<18} {r.period:<10} {r.status:<9} {r.attempts:>3} {_num(d.get('candidate')):>9} "
                     f"{_num(d.get('serving')):>9} {_num(d.get('improvement'), '+.4f'):>8} {_num(cm.get('gap')):>9} "
                     f"{_num(sm.get('gap')):>9} {_num(secs, '.1f'):>8}  {(r.serving or '-'):<20} "
                     f"{(r.published or '-'):<20}")
    reasons = [(r, (r.decision or {}).get("reason") or r.error) for r in rows]
    if any(reason for _, reason in reasons):
        lines.append("")
        lines.append("reasons:")
        for r, reason in reasons:
            if reason:
                lines.append(f"  {r.job}/{r.period} [{r.status}]: {reason}")
    return "\n".join(lines)


def serving_lines(job: RetrainJob) -> list[str]:
    """The job's published versions, oldest first, with what each replaced: the lineage."""
    reg = Registry(job.registry)
    versions = reg.versions(job.experiment, job.species)
    if not versions:
        return [f"  {job.experiment}/{job.species}: nothing published in {reg.root}"]
    live = [v for v in versions if v.revoked is None]
    newest = max(live, key=lambda v: v.id.version) if live else None
    out = []
    for v in versions:
        info = v.metadata.get("retrain") or {}
        mark = "  <- serving now" if v is newest else ("  (revoked)" if v.revoked else "")
        by = f"retrain {info.get('job')}/{info.get('period')}" if info else "published by hand"
        auc = ((v.metadata.get("metrics") or {}).get("mc") or {}).get("auc")
        out.append(f"  {v.id}  runs {v.runs[0]}-{v.runs[1]} ({','.join(v.periods) or '-'})  test AUC(MC) {_num(auc)}"
                   f"  replaces {v.metadata.get('replaces') or '-'}  [{by}]{mark}")
    return out


def status_report(jobs: list[RetrainJob], stores: dict[str, StateStore]) -> str:
    parts = []
    for job in jobs:
        store = stores[job.name]
        rows = store.all_runs(job.name)
        try:
            complete, incomplete = scan_periods(job.periods)
            seen = f"{len(complete)} complete ({', '.join(p.name for p in complete) or '-'})"
            if incomplete:
                seen += f"; incomplete, ignored: {', '.join(incomplete)}"
        except Exception as exc:  # status must still print the database's view
            seen = f"cannot scan {job.periods.pattern}: {exc}"
        parts.append(f"job {job.name}: {job.experiment}/{job.species} ({job.family}); state {store.url}")
        parts.append(f"  periods on disk: {seen}")
        for r in rows:
            if r.status == "running":
                parts.append(f"  {r.period}: running on {r.owner}, step {r.step or '-'}, lease until "
                             f"{_when(r.lease_expires_at)}")
            elif r.status == "pending" and r.next_attempt_at:
                parts.append(f"  {r.period}: waiting to retry at {_when(r.next_attempt_at)} after "
                             f"{r.attempts} attempt(s): {r.error}")
        parts.append(decision_table(rows) if rows else "  no runs yet")
        parts.append("serving (registry lineage):")
        parts += serving_lines(job)
        parts.append("")
    return "\n".join(parts)
