"""Readable tables: the decision log of the runs, which model serves each period and why,
and the registry lineage."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from autopid.publish.registry import ModelVersion, Registry
from autopid.retrain.job import RetrainJob
from autopid.retrain.owner import dead_here
from autopid.retrain.periods import Period, scan_periods
from autopid.retrain.serving import KEPT, RETRAIN_KEY, outcome, publish_key
from autopid.retrain.state import FAILED, PENDING, RUNNING, RunRow, StateStore


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
        if v.is_extension:
            by = f"validity extension of {v.model_of}" + (f" for {info.get('period')}" if info else "")
        auc = ((v.metadata.get("metrics") or {}).get("mc") or {}).get("auc")
        out.append(f"  {v.id}  runs {v.runs[0]}-{v.runs[1]} ({','.join(v.periods) or '-'})  test AUC(MC) {_num(auc)}"
                   f"  replaces {v.metadata.get('replaces') or '-'}  [{by}]{mark}")
    return out


def _entry_of(versions: list[ModelVersion], job: str, period: str) -> ModelVersion | None:
    key = publish_key(job, period)
    for v in reversed(versions):
        info = v.metadata.get(RETRAIN_KEY) or {}
        if v.metadata.get("publish_key") == key or (info.get("job") == job and info.get("period") == period):
            return v
    return None


def _serving_at(live: list[ModelVersion], run: int) -> ModelVersion | None:
    covering = [v for v in live if v.covers(run)]
    return max(covering, key=lambda v: v.id.version) if covering else None


def period_serving_lines(job: RetrainJob, rows: list[RunRow], periods: list[Period]) -> list[str]:
    """One line per period of ``job`` (on disk or in the state): its runs, the registry
    entry that serves them now (the conditions-database rule) and why."""
    reg = Registry(job.registry)
    versions = reg.versions(job.experiment, job.species)
    live = [v for v in versions if v.revoked is None]
    on_disk = {p.name: p for p in periods}
    by_row = {r.period: r for r in rows}
    out = []
    for name in sorted(set(on_disk) | set(by_row)):
        row, entry = by_row.get(name), _entry_of(versions, job.name, name)
        period = on_disk.get(name)
        runs = period.runs if period is not None and period.runs else (entry.runs if entry is not None else None)
        if runs is None:
            status = row.status if row else "not seen yet"
            out.append(f"  {name:<10} runs ?  -  no model: {status}" + (f" ({row.error})" if row and row.error else ""))
            continue
        first_v, last_v = _serving_at(live, runs[0]), _serving_at(live, runs[1])
        span = f"runs {runs[0]}-{runs[1]}"
        if first_v is None or last_v is None:
            status = row.status if row else "not seen yet"
            running = "running"
            if row is not None and status == RUNNING:
                if dead_here(row.owner):
                    running = f"running, but its scheduler {row.owner} is gone: the next pass takes it over"
            detail = {FAILED: f"failed: {row.error}" if row else "failed", RUNNING: running,
                      PENDING: "waiting for its pass" + (f" (retry after: {row.error})" if row and row.error else "")
                      }.get(status, status)
            if entry is not None and entry.revoked:
                detail += f"; its entry {entry.id} is revoked"
            partly = f" (only {(first_v or last_v).id} covers part of it)" if (first_v or last_v) else ""
            out.append(f"  {name:<10} {span}  -  no model{partly}: {detail}")
            continue
        now = first_v if first_v is last_v else None
        ids = str(first_v.id) if now is not None else f"{first_v.id} .. {last_v.id}"
        if now is not None and entry is not None and now.id == entry.id:
            if outcome(entry) == KEPT:
                why = f"kept after rejection: the model of {entry.model_of}, validity extended to {name}"
            else:
                why = f"promoted: the candidate of {name}"
        elif now is not None:
            why = now.explain() + (f" (overrides this period's own entry {entry.id})" if entry is not None else "")
        else:
            why = "several entries cover parts of the period (see the lineage)"
        out.append(f"  {name:<10} {span}  {ids:<22}  {why}")
    return out or ["  no periods yet"]


def status_report(jobs: list[RetrainJob], stores: dict[str, StateStore]) -> str:
    parts = []
    for job in jobs:
        store = stores[job.name]
        rows = store.all_runs(job.name)
        complete: list[Period] = []
        try:
            complete, incomplete = scan_periods(job.periods)
            seen = f"{len(complete)} complete ({', '.join(p.name for p in complete) or '-'})"
            if incomplete:
                seen += f"; incomplete, ignored: {', '.join(incomplete)}"
            broken = [p for p in complete if p.error]
            if broken:
                seen += f"; broken completion marker: {', '.join(p.name for p in broken)}"
        except Exception as exc:  # status must still print the database's view
            seen = f"cannot scan {job.periods.pattern}: {exc}"
        parts.append(f"job {job.name}: {job.experiment}/{job.species} ({job.family}); state {store.display_url}")
        parts.append(f"  periods on disk: {seen}")
        for r in rows:
            if r.status == "running":
                parts.append(f"  {r.period}: running on {r.owner}, step {r.step or '-'}, lease until "
                             f"{_when(r.lease_expires_at)}")
            elif r.status == "pending" and r.next_attempt_at:
                parts.append(f"  {r.period}: waiting to retry at {_when(r.next_attempt_at)} after "
                             f"{r.attempts} attempt(s): {r.error}")
        parts.append(decision_table(rows) if rows else "  no runs yet")
        parts.append(f"serving by period (registry {Registry(job.registry).root}; newest entry covering the runs):")
        try:
            parts += period_serving_lines(job, rows, complete)
        except Exception as exc:  # an unreadable registry: say so, keep the rest
            parts.append(f"  cannot read the registry: {exc}")
        parts.append("serving (registry lineage):")
        parts += serving_lines(job)
        parts.append("")
    return "\n".join(parts)
