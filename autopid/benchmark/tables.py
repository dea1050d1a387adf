"""``benchmark.md``: the records as tables like the ALICE paper's (species rows, method
columns), with the conventions, the configuration and the run time in the header."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autopid.benchmark.records import EXTRA_METHODS, FRAG_BINS, METHODS, parse_bin

if TYPE_CHECKING:
    from autopid.benchmark.runner import BenchmarkResult

METHOD_NAMES = {
    "fse": "FSE+attention",
    "mda": "MDA",
    "mda_no_adaptation": "MDA w/o adaptation",
    "nsigma": "n-sigma",
    "cut": "classic cut",
    "xgboost": "XGBoost",
    "mlp_imputation": "MLP (imputation)",
    "second_track_veto": "veto only",
    "irreducible_limit": "limit (above-L1 irreducible)",
}
ALICE_REFERENCE = (
    "For scale, not for comparison (other data: ALICE pp 13 TeV, Pythia + GEANT, 2.7 M tracks; EPJ C 84 "
    "(2024) 691), F1 in %: FSE+attention pion 98.50, kaon 87.44, proton 95.79; n-sigma 87.87, 73.17, 74.61; "
    "MLP with mean imputation 98.40, 86.36, 95.54.")
PERCENT = {"f1", "efficiency", "purity", "efficiency_gap"}
METRIC_NAMES = {
    "f1": "F1 (%)", "efficiency": "efficiency (%)", "purity": "purity (%)", "auc": "ROC AUC",
    "rejection_at_90": "rejection at 90 % signal efficiency (1/eps_B)",
    "efficiency_gap": "MC - Data efficiency at the working point (percentage points)",
    "domain_accuracy": "Data-vs-MC classifier accuracy on the model's features (0.5 = indistinguishable)",
}


def fmt(value: float | None, std: float | None, metric: str) -> str:
    if value is None:
        return "—"
    scale = 100.0 if metric in PERCENT else 1.0
    v = value * scale
    s = None if std is None else std * scale
    if metric == "rejection_at_90":
        digits = 0 if abs(v) >= 100 else (1 if abs(v) >= 10 else 2)
    elif metric in PERCENT:
        digits = 2
    elif metric == "auc":
        digits = 4
    else:
        digits = 3
    text = f"{v:.{digits}f}"
    if s is not None and math.isfinite(s):
        text += f" ± {s:.{digits}f}"
    return text


class Index:
    def __init__(self, records: Iterable[dict[str, Any]]) -> None:
        self.by: dict[tuple[Any, ...], dict[str, Any]] = {}
        for r in records:
            self.by[(r["experiment"], r["species"], r["charge"], r["method"], r["domain"], r["metric"], r["bin"])] = r

    def get(self, exp: str, species: str, charge: int | None, method: str, domain: str, metric: str,
            bin_: str | None = None) -> dict[str, Any] | None:
        return self.by.get((exp, species, charge, method, domain, metric, bin_))

    def cell(self, *key: Any) -> str:
        r = self.get(*key)
        return "" if r is None else fmt(r["value"], r["std"], key[5])

    def methods(self, exp: str) -> list[str]:
        present = {k[3] for k in self.by if k[0] == exp}
        return [m for m in (*METHODS, *EXTRA_METHODS) if m in present]

    def species(self, exp: str) -> list[str]:
        return list(dict.fromkeys(k[1] for k in self.by if k[0] == exp))

    def charges(self, exp: str, species: str) -> list[int | None]:
        cs = {k[2] for k in self.by if k[0] == exp and k[1] == species}
        return [c for c in (1, -1) if c in cs]

    def bins(self, exp: str, species: str) -> list[str]:
        bs = {k[6] for k in self.by if k[0] == exp and k[1] == species and k[6] and not k[6].startswith("frag:")}
        return sorted(bs, key=lambda b: parse_bin(b)[0])


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _species_label(species: str, charge: int | None) -> str:
    return species if charge is None else f"{species} ({'+' if charge > 0 else '-'})"


def species_table(ix: Index, exp: str, methods: Sequence[str], domain: str, metric: str) -> list[str]:
    rows = []
    for sp in ix.species(exp):
        for charge in (None, *ix.charges(exp, sp)):
            cells = [ix.cell(exp, sp, charge, m, domain, metric) for m in methods]
            if any(cells):
                rows.append([_species_label(sp, charge), *cells])
    if not rows:
        return []
    keep = [i for i in range(len(methods)) if any(r[1 + i] for r in rows)]  # e.g. domain accuracy: models only
    return _table(["species", *(METHOD_NAMES.get(methods[i], methods[i]) for i in keep)],
                  [[r[0], *(r[1 + i] for i in keep)] for r in rows])


def binned_table(ix: Index, exp: str, species: str, methods: Sequence[str], domain: str) -> list[str]:
    bins = ix.bins(exp, species)
    rows = []
    for m in methods:
        cells = []
        for b in bins:
            e = ix.get(exp, species, None, m, domain, "efficiency", b)
            p = ix.get(exp, species, None, m, domain, "purity", b)
            if e is None and p is None:
                cells.append("")
                continue
            cells.append(f"{fmt(e and e['value'], None, 'efficiency')} / {fmt(p and p['value'], None, 'purity')}")
        if any(cells):
            rows.append([METHOD_NAMES.get(m, m), *cells])
    if not rows:
        return []
    return _table(["method", *bins], rows)


def frag_table(ix: Index, exp: str, species: str, methods: Sequence[str], domain: str) -> list[str]:
    cols = [None, *FRAG_BINS.values()]
    if not any(k[0] == exp and k[1] == species and k[4] == domain and (k[6] or "").startswith("frag:")
               for k in ix.by):
        return []  # no fragmentation truth (ALICE, or a dataset without truth extra 'frag')
    rows = []
    for m in methods:
        cells = [ix.cell(exp, species, None, m, domain, "rejection_at_90", b) for b in cols]
        if any(cells):
            rows.append([METHOD_NAMES.get(m, m), *cells])
    if not rows:
        return []
    names = {None: "all background", "frag:none": "no interaction", "frag:above_l1": "above L1",
             "frag:l1_l2": "between L1 and L2", "frag:deep": "deeper (L2-L8)"}
    return _table(["method", *(names[c] for c in cols)], rows)


def _veto_lines(ix: Index, exp: str, species: str) -> list[str]:
    out = []
    for domain in ("mc", "data"):
        veto = ix.get(exp, species, None, "second_track_veto", domain, "rejection_at_90")
        mda = ix.get(exp, species, None, "mda", domain, "rejection_at_90")
        if veto is None or mda is None:
            continue
        v, m = veto["value"], mda["value"]
        if v is None:
            verdict = "the veto alone rejects every background event at 90 % efficiency (unexpected)"
        elif m is None:
            verdict = "the MDA rejects every background event of the test sample: unbounded rejection, above the veto's"
        else:
            verdict = (f"the veto alone {'does not reach' if v < m else 'REACHES'} the MDA's rejection "
                       f"({fmt(v, None, 'rejection_at_90')} vs {fmt(m, None, 'rejection_at_90')}, "
                       f"{m / v:.1f}x)" if v > 0 else "")
        out.append(f"- {domain.upper() if domain == 'mc' else 'Data'}: {verdict}.")
    return out


def _limit_lines(ix: Index, exp: str, species: str) -> list[str]:
    """The irreducible limit next to twice the classic cut's rejection (the issue's target)."""
    out = []
    for domain in ("mc", "data"):
        lim = ix.get(exp, species, None, "irreducible_limit", domain, "rejection_at_90")
        cut = ix.get(exp, species, None, "cut", domain, "rejection_at_90")
        mda = ix.get(exp, species, None, "mda", domain, "rejection_at_90")
        if lim is None or lim["value"] is None or cut is None or cut["value"] is None:
            continue
        two = 2 * cut["value"]
        where = "MC" if domain == "mc" else "Data"
        reach = "above" if lim["value"] >= two else "BELOW"
        line = (f"- {where}: limit {fmt(lim['value'], None, 'rejection_at_90')} ({reach} twice the classic cut's "
                f"{fmt(two, None, 'rejection_at_90')})")
        if mda is not None and mda["value"] is not None:
            line += f"; the MDA reaches {mda['value'] / lim['value']:.0%} of the limit"
        out.append(line + ".")
    return out


def _dataset_lines(result: BenchmarkResult) -> list[str]:
    rows = []
    for d in result.header["datasets"]:
        r = d["rows"]
        split = ", ".join(f"{s} {r[s].get('mc') or 0}/{r[s].get('data') or 0}" for s in ("train", "validation", "test")
                          if s in r)
        rows.append([d["experiment"], f"`{d['name']}`", d["origin"], ", ".join(d["species"]), split,
                     str(d["kinematic"]), ", ".join(d["methods"])])
    return _table(["experiment", "dataset", "from", "species", "rows MC/Data", "bins in", "methods"], rows)


def _runtime_lines(result: BenchmarkResult) -> list[str]:
    per: dict[str, list[float]] = {}
    for j in result.jobs:
        per.setdefault(j.job.method, []).append(j.cpu_seconds)
    rows = [[METHOD_NAMES.get(m, m), str(len(v)), f"{sum(v):.0f}", f"{max(v):.0f}"] for m, v in per.items()]
    lines = _table(["method", "jobs", "CPU s (sum)", "CPU s (longest job)"], rows)
    skipped = [j for j in result.jobs if j.skipped]
    failed = [j for j in result.jobs if j.error]
    seen: set[tuple[str, str, str]] = set()
    for j in skipped:
        key = (j.job.experiment, j.job.method, j.skipped or "")
        if key not in seen:
            seen.add(key)
            lines.append(f"\n- skipped {j.job.method} on {j.job.experiment}: {j.skipped}")
    for j in failed:
        lines.append(f"\n- FAILED {j.job.method} on {j.job.experiment} {j.job.species} seed {j.job.seed}: {j.error}")
    return lines


_MDA_PATH = ("charge_calibration", "rigidity_reweighting", "label_shift_weighting", "label_shift_method")


def _resolved(training: dict[str, Any]) -> dict[str, Any]:
    from autopid.train.config import TrainingSpec

    return TrainingSpec.model_validate(training).model_dump()


def _resolved_mda(preset: Any) -> str:
    t = _resolved(preset.mda["training"])
    shown = {k: t[k] for k in _MDA_PATH if k in t}
    return f" (calibrate / reweight / adapt settings as resolved: `{shown}`)" if shown else ""


def _no_adaptation_diff(preset: Any) -> str:
    from autopid.benchmark.methods import no_adaptation

    a, b = _resolved(preset.mda["training"]), _resolved(no_adaptation(preset.mda)["training"])
    return ", ".join(f"`{k}: {b[k]}`" for k in a if a[k] != b[k]) or "no difference"


def markdown(result: BenchmarkResult, figures: Sequence[Path] = ()) -> str:
    h = result.header
    preset = h["preset"]
    ix = Index([*result.records, *result.extra])
    lines = [
        "# autopid benchmark",
        "",
        f"- date: {h['date']}",
        f"- command: `{h['command'] or '(Python API)'}`",
        f"- mode: {preset.name}; seeds: {h['seeds']} (training seeds 0..{h['seeds'] - 1}; the split is the "
        "dataset's, the same for every seed and method)",
        f"- host: {h['host']}; {h['workers']} worker process(es), one torch thread each",
        f"- wall time: {result.wall_seconds:.0f} s (CPU {result.cpu_seconds:.0f} s, all processes); "
        f"load average before {h['load_before'][0]:.2f}, after {h['load_after'][0]:.2f}",
    ]
    if h.get("simulation_seconds"):
        lines.append("- simulation: " + ", ".join(f"{k} " + ("reused" if v == 0 else f"{v:.1f} s")
                                                   for k, v in h["simulation_seconds"].items()))
    lines += [
        "",
        "## Conventions",
        "",
        "- Every cell is the mean over the seeds ± the sample standard deviation (no ± with one seed). "
        "`benchmark.json` holds every number shown here and more: a list of records "
        "`{experiment, species, charge, method, domain, metric, value, std, bin}`; `extra.json` has the "
        "same shape for the second-track veto alone (method `second_track_veto`) and the irreducible limit "
        "(method `irreducible_limit`, one value per domain); `jobs.json` what each "
        "training did (working point, tuning, best epoch, time).",
        "- `domain: mc` is the MC test split (MC truth). `domain: data` is the simulated Data test split: its "
        "truth is **hidden truth, read for evaluation only** (never for training or for a working point).",
        "- Working point: the learned models (FSE, MDA, XGBoost, MLP) cut at the best F1 on the MC validation "
        "split (all its rows, natural MC composition; training validates on a subsample); the classic "
        "selections (n-sigma, classic cut, veto) keep their own cut, calibrated on the MC training sample. F1, efficiency, purity and the MC - Data efficiency gap are "
        "taken at that cut; the rejection `1/eps_B` at the cut that keeps 90 % of the signal of that sample "
        "(Data: chosen with the hidden truth, evaluation only; for a discrete score, the cut that keeps at "
        "least 90 %); '—' marks an undefined value (no signal, nothing selected, or no background selected: "
        "unbounded rejection).",
        "- `charge`: 1 / -1 for the tracks of one charge sign (role `charge_sign`), null for both "
        "(and for AMS). `bin`: null integrated; `\"[lo,hi)\"` a bin of p (GeV/c, ALICE) or inner rigidity (GV, "
        "AMS), lower edge included, upper edge excluded, edges printed with `%g`; `\"frag:none\"`, "
        "`\"frag:above_l1\"`, `\"frag:l1_l2\"`, `\"frag:deep\"`: the background events of one fragmentation "
        "category (no interaction, above L1, between L1 and L2, deeper), at the 90 % cut of the whole sample.",
        "- `domain_accuracy`: accuracy of a small classifier telling Data from MC on the model's frozen "
        "features, cross-fitted over 2 folds of the test rows (each row scored by a classifier that did not "
        "train on it; 0.5 means the features cannot tell the domains apart); models only.",
        f"- FSE+attention: fixed, the base configuration of `search_spaces/fse.yaml` (the published "
        f"architecture, model params `{preset.fse['model']['params']}`), training `{preset.fse['training']}`.",
        f"- MDA: the base of `search_spaces/mda.yaml`, model params `{preset.mda['model']['params']}`, "
        f"training `{preset.mda['training']}`{_resolved_mda(preset)}; MDA w/o adaptation: the same without "
        f"the domain head and what acts through it ({_no_adaptation_diff(preset)}).",
        "- XGBoost and the MLP with mean imputation see the model's inputs; "
        + (f"each tuned with {preset.baseline_trials} Optuna trials (`tune_baseline`) on the training and "
           "validation samples." if preset.baseline_trials else "fixed defaults (no tuning)."),
        "",
        "## Datasets",
        "",
        *_dataset_lines(result),
    ]
    for exp in dict.fromkeys(r["experiment"] for r in [*result.records, *result.extra]):
        methods = [m for m in ix.methods(exp) if m not in EXTRA_METHODS]
        all_methods = ix.methods(exp)
        lines += ["", f"## {exp}", ""]
        for metric in ("f1", "efficiency", "purity", "auc", "rejection_at_90"):
            t = species_table(ix, exp, methods, "mc", metric)
            if t:
                lines += [f"### MC: {METRIC_NAMES[metric]}", "", *t, ""]
                if metric == "f1" and exp == "alice":
                    lines += [ALICE_REFERENCE, ""]
        for metric in ("efficiency", "purity", "rejection_at_90", "efficiency_gap", "domain_accuracy", "f1", "auc"):
            t = species_table(ix, exp, methods if metric != "rejection_at_90" else all_methods, "data", metric)
            if t:
                lines += [f"### Data (hidden truth, evaluation only): {METRIC_NAMES[metric]}", "", *t, ""]
        for sp in ix.species(exp):
            frag_mc = frag_table(ix, exp, sp, all_methods, "mc")
            frag_data = frag_table(ix, exp, sp, all_methods, "data")
            if frag_mc or frag_data:
                lines += [f"### {sp}: rejection at 90 % signal efficiency per fragmentation category", ""]
                if frag_mc:
                    lines += ["MC:", "", *frag_mc, ""]
                if frag_data:
                    lines += ["Data (hidden truth, evaluation only):", "", *frag_data, ""]
                veto = _veto_lines(ix, exp, sp)
                if veto:
                    lines += ["Second-track veto alone against the MDA (whole background):", "", *veto, ""]
                limit = _limit_lines(ix, exp, sp)
                if limit:
                    lines += ["Irreducible limit: the rejection at 90 % signal efficiency of a selection that "
                              "rejects every background event except those that interacted above L1, which pass "
                              "like the signal (hidden truth, evaluation only; `irreducible_limit` in "
                              "`extra.json`):", "", *limit, ""]
            for domain in ("mc", "data"):
                t = binned_table(ix, exp, sp, methods, domain)
                if t:
                    where = "MC" if domain == "mc" else "Data (hidden truth, evaluation only)"
                    lines += [f"### {sp}: efficiency / purity (%) per bin, {where}", "", *t, ""]
    if figures:
        lines += ["## Plots", ""]
        lines += [f"![{f.stem}](plots/{f.name})" for f in figures]
        lines.append("")
    lines += ["## Run time", "", *_runtime_lines(result), ""]
    return "\n".join(lines) + "\n"
