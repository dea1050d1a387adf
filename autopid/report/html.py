"""The report page: one static HTML file that links its PNGs by relative path, so the
report directory can be copied or served as it is. Every value is escaped."""

from __future__ import annotations

import datetime as _dt
import html
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopid import __version__
from autopid.report.figures import HIDDEN
from autopid.report.inputs import RETRAIN, SEARCH, ReportInput

if TYPE_CHECKING:  # pragma: no cover
    from autopid.report.build import ModelReport
    from autopid.report.search import StudyReport

_CSS = """
body { font-family: sans-serif; max-width: 1250px; margin: 1em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } td.l, th.l { text-align: left; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; max-width: 600px; }
.note { color: #8a5a00; } .hidden { color: #a00; font-weight: bold; }
code { background: #f4f4f4; padding: 1px 4px; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        if isinstance(x, float) and math.isnan(x):
            return "–"
        if isinstance(x, float) and math.isinf(x):
            return "∞"
        return f"{x:.{digits}g}" if isinstance(x, float) else str(x)
    return _e(x)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f'<th class="{"l" if i == 0 else ""}">{_e(h)}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i == 0 else ""}">{_num(v)}</td>'
                                    for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figures(figs: dict[str, Path], out_dir: Path) -> str:
    parts = []
    for caption, path in figs.items():
        rel = os.path.relpath(path, out_dir).replace(os.sep, "/")
        cls = ' class="hidden"' if HIDDEN in caption else ""
        parts.append(f'<figure><a href="{_e(rel)}"><img src="{_e(rel)}" alt="{_e(caption)}"></a>'
                     f"<figcaption{cls}>{_e(caption)}</figcaption></figure>")
    return "\n".join(parts)


def _notes(notes: Sequence[str]) -> str:
    return "".join(f'<p class="note">{_e(n)}</p>' for n in notes)


def _pm(value: Any, error: Any, reason: Any) -> str:
    """``value ± error``, or why there is none (a truth-free estimate)."""
    if value is None:
        return f"not estimable: {reason}" if reason else "–"
    return f"{value:.3f} ± {error:.3f}" if error is not None else f"{value:.3f}"


def _model_section(m: ModelReport, out_dir: Path) -> str:
    ev = m.evaluation
    rows = []
    for s in ev.selections:
        mc, data = s.metrics["mc"], s.metrics.get("data", {})
        gap = mc["efficiency"] - data["efficiency"] if data else float("nan")
        est = s.metrics.get("data_estimate") or {}
        truth_region = (est.get("hidden_truth") or {}).get("efficiency_in_estimate_region")
        rows.append([s.name + (" (model)" if s.is_model else ""), s.threshold, mc["auc"], mc["efficiency"],
                     mc["purity"], mc["f1"], mc["rejection_90"], data.get("auc", float("nan")),
                     data.get("efficiency", float("nan")), data.get("purity", float("nan")), gap,
                     _pm(est.get("efficiency_data"), est.get("efficiency_data_error"), est.get("reason")),
                     truth_region, _pm(est.get("gap"), est.get("gap_error"), est.get("reason"))])
    header = ["selection", "cut", "AUC MC", "eff MC", "purity MC", "F1 MC", "rejection@90% MC",
              "AUC Data*", "eff Data*", "purity Data*", "eff gap MC−Data*", "eff Data, estimated (fit region)",
              "eff Data* (fit region)", "eff gap MC−Data, estimated"]
    cfg = ev.cfg
    return (
        f"<h2>{_e(ev.source.title)}</h2>"
        f"<p>{_e(ev.experiment)} · {_e(ev.family)} · signal <b>{_e(ev.species)}</b> · period {_e(cfg.period)} · "
        f"dataset <code>{_e(cfg.dataset)}</code> · model <code>{_e(ev.source.model_path)}</code></p>"
        f"<p>Test split: {len(ev.mc)} MC and {len(ev.data)} Data rows. Learned selections (the model and the "
        "learned baselines) cut at their best F1 on the model's validation MC (the natural MC composition, the "
        "same rows for every trial of a search); learned baselines are tuned on the model's own training sample. "
        "The classic selections (n-sigma, AMS classic, second-track veto) read the dataset's roles, are calibrated "
        "on MC (the AMS charges also on Data, without truth) and take their working point on validation MC.</p>"
        + _table(header, rows)
        + f'<p class="hidden">* {_e(HIDDEN)}: the labels of simulated Data, never used for training or cuts.</p>'
        + "<p>Estimated: the Data signal efficiency from a template fit without truth (AMS: the L1 charge; ALICE: "
        "the TPC dE/dx where the species separate), over the rows of the fit region; what the promotion gate "
        "reads. The hidden-truth column beside it checks the estimate on the same rows.</p>"
        + _notes(ev.notes) + _figures(m.figures, out_dir)
    )


def _study_section(s: StudyReport, storage_hint: str, out_dir: Path) -> str:
    params = ", ".join(f"{k} = {_num(v)}" for k, v in s.best_params.items()) or "–"
    c = s.counts or {"completed": s.n_complete}
    outcome = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in c.items() if n)
    best = f"trial {s.best_trial} at epoch {s.best_epoch}: " if s.best_trial is not None else ""
    return (f"<h2>Study {_e(s.name)}</h2><p>{s.n_trials} trials ({_e(outcome or 'none ended')}); best: "
            f"{_e(best)}objective {_num(s.best_value)}; best parameters: {params}</p><p>Interactive view: "
            f"<code>{_e(storage_hint)}</code></p>" + _notes(s.notes) + _figures(s.figures, out_dir))


def _decisions(decisions: Sequence[dict[str, Any]]) -> str:
    if not decisions:
        return ""
    keys: list[str] = []
    for d in decisions:
        keys += [k for k in d if k not in keys and not isinstance(d[k], (dict, list))]
    return "<h2>Retraining decisions</h2>" + _table(keys, ([d.get(k, "") for k in keys] for d in decisions))


def render(inp: ReportInput, studies: Sequence[StudyReport], models: Sequence[ModelReport], out_dir: Path, *,
           seconds: float, max_rows: int | None) -> str:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>autopid report: {_e(inp.kind)} <code>{_e(inp.directory)}</code></h1>",
            f"<p>Written {stamp} by autopid {_e(__version__)} in {seconds:.0f} s; evaluation rows per domain "
            f"at most {_e(max_rows if max_rows is not None else 'all')}.</p>", _notes(inp.notes)]
    if inp.kind == RETRAIN:
        body.append(_decisions(inp.decisions))
    # each study is followed by the report on its best model; a run's model stands alone
    by_source = {id(m.evaluation.source): m for m in models}
    shown: set[int] = set()
    for src, s in zip(inp.studies, studies):
        body.append(_study_section(s, f"optuna-dashboard {src.storage}", out_dir))
        if src.model is not None and id(src.model) in by_source:
            body.append(_model_section(by_source[id(src.model)], out_dir))
            shown.add(id(src.model))
    for m in models:
        if id(m.evaluation.source) not in shown:
            body.append(_model_section(m, out_dir))
    if inp.kind == SEARCH and not models:
        body.append('<p class="note">no study has a best model yet</p>')
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>autopid report: '
            f"{_e(inp.directory.name)}</title><style>{_CSS}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")
