"""``autopid models``: publish, list, show, resolve and revoke registry versions."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _registry_parent() -> argparse.ArgumentParser:
    reg = argparse.ArgumentParser(add_help=False)
    reg.add_argument("--registry", default=None, metavar="DIR",
                     help="registry root (default: $AUTOPID_REGISTRY, else ./registry; local paths only)")
    return reg


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("models", parents=[common], help="the model registry: publish, list, show, resolve, revoke",
                       description="Publish trained models to a versioned registry (ONNX, side files, metadata, "
                       "run validity) and look them up by run.")
    actions = p.add_subparsers(dest="models_command", metavar="ACTION", parser_class=type(p))
    actions.required = True
    reg = _registry_parent()

    pub = actions.add_parser("publish", parents=[common, reg], help="export a trained model and publish it",
                             description="Export to ONNX (parity with PyTorch checked), choose thresholds, evaluate "
                             "on the test split and publish as the next version.")
    pub.add_argument("path", help="training run directory (model.pt), search study directory (best_model.pt), "
                     "search directory with one matching study, or a .pt file")
    pub.add_argument("--species", required=True, help="the species the model selects (required)")
    pub.add_argument("--period", default=None, help="run period the model is valid for (its runs come from the "
                     "cache inputs of that period; default: none, then --runs is needed)")
    pub.add_argument("--runs", default=None, metavar="FIRST-LAST",
                     help="validity run range (default: the period's runs)")
    pub.add_argument("--cache", default=None, metavar="ENTRY", help="preprocessing cache entry the model was trained on "
                     "(default: found from the run directory or the cache root)")
    pub.add_argument("--baseline-metrics", default=None, metavar="JSON",
                     help="baseline metrics to record next to the model's (default: none)")
    pub.add_argument("--tolerance", type=float, default=None,
                     help="ONNX vs PyTorch parity tolerance (default: 1e-5)")
    pub.add_argument("--max-eval-rows", type=int, default=200_000,
                     help="rows per domain for the test metrics (default: 200000)")
    pub.set_defaults(func=run_publish)

    ls = actions.add_parser("list", parents=[common, reg], help="list published versions",
                            description="Every version of the registry, revoked ones and validity extensions "
                            "included, oldest first per species.")
    ls.add_argument("--species", default=None, help="only this species, e.g. phosphorus (default: all species)")
    ls.add_argument("--experiment", default=None, help="only this experiment, e.g. ams (default: all experiments)")
    ls.set_defaults(func=run_list)

    show = actions.add_parser("show", parents=[common, reg], help="show one version's metadata (files verified)")
    show.add_argument("model_id", metavar="ID", help="EXPERIMENT/SPECIES/vNNNN, e.g. alice/proton/v0001")
    show.add_argument("--json", action="store_true", help="print the whole metadata.json")
    show.set_defaults(func=run_show)

    res = actions.add_parser("resolve", parents=[common, reg], help="which version serves a run?",
                             description="The newest non-revoked version whose run range covers the run (the "
                             "conditions-database rule: the latest upload wins). Prints its id and directory.")
    res.add_argument("--species", required=True, help="the species to select, e.g. phosphorus (required)")
    res.add_argument("--run", required=True, type=int, help="run number, e.g. 1600067600 (required)")
    res.add_argument("--experiment", default=None, help="experiment, e.g. ams (default: the one experiment that "
                     "publishes the species; required when several do)")
    res.set_defaults(func=run_resolve)

    rev = actions.add_parser("revoke", parents=[common, reg], help="revoke a version (kept, no longer resolved)",
                             description="Mark a version revoked: its files stay, but resolve no longer returns "
                             "it (an older version covering the run serves again).")
    rev.add_argument("model_id", metavar="ID", help="EXPERIMENT/SPECIES/vNNNN to revoke, e.g. ams/phosphorus/v0002")
    rev.add_argument("--reason", default="", help="recorded in revoked.json (default: empty)")
    rev.set_defaults(func=run_revoke)


def _registry(args: argparse.Namespace) -> Any:
    from autopid.publish.registry import Registry

    return Registry(args.registry)


def run_publish(args: argparse.Namespace) -> int:
    from autopid.publish.names import parse_run_range
    from autopid.publish.publisher import publish_model

    runs = parse_run_range(args.runs) if args.runs else None
    v = publish_model(args.path, species=args.species, period=args.period, runs=runs, registry=_registry(args),
                      cache=args.cache, baseline_metrics=args.baseline_metrics, tolerance=args.tolerance,
                      max_eval_rows=args.max_eval_rows)
    m = v.metadata
    first, last = v.runs
    print(f"published {v.id}: runs {first}-{last} ({', '.join(v.periods) or 'no period'}); replaces "
          f"{m.get('replaces') or 'nothing'}")
    print(f"  ONNX vs PyTorch: max |diff| {m['parity']['max_abs_diff']:.2g} on {m['parity']['rows']} rows, "
          f"{len(m['parity']['patterns'])} input patterns")
    mt = m.get("metrics", {})
    line = f"  test AUC MC {mt.get('mc', {}).get('auc')}"
    if "gap" in mt:  # the Data efficiency is a truth-free estimate (template fit)
        line += (f"; Data efficiency (estimated) {mt['gap'].get('efficiency_data')}; MC-Data efficiency gap "
                 f"{mt['gap'].get('gap')}" + ("" if mt["gap"].get("estimable", True) else
                                              f" (not estimable: {mt['gap'].get('reason')})"))
    print(line + f"; threshold {m['thresholds']['best_f1']:.4f} (best F1 on validation)")
    print(f"  {v.path}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    reg = _registry(args)
    if not reg.root.is_dir():
        # a registry named on purpose that is not there is more likely a typo than empty
        print(f"no registry at {reg.root} (nothing was ever published there)", file=sys.stderr)
        return 1 if args.registry else 0
    versions = reg.versions(args.experiment, args.species)
    if not versions:
        print(f"no published models in {reg.root}")
        return 0
    for v in versions:
        print(v.summary())
    return 0


def run_show(args: argparse.Namespace) -> int:
    v = _registry(args).get(args.model_id)  # verifies every file
    m = v.metadata
    if args.json:
        print(json.dumps({**m, "revoked": v.revoked}, indent=1))
        return 0
    first, last = v.runs
    status = f"REVOKED {v.revoked.get('revoked')}: {v.revoked.get('reason', '')}" if v.revoked else "active"
    print(f"{v.id}  ({status})")
    print(f"  path:       {v.path}")
    print(f"  family:     {m.get('family')}   created {m.get('created')}   replaces {m.get('replaces') or '-'}")
    print(f"  validity:   runs {first}-{last}; periods {', '.join(v.periods) or '-'}")
    td = m.get("training_data", {})
    n_inputs = len(td.get("inputs", []))
    print(f"  trained on: {td.get('dataset')} cache {str(td.get('cache_key'))[:16]} ({n_inputs} input files)")
    cfg = m.get("config", {})
    print(f"  config:     sha256 {str(cfg.get('sha256'))[:16]} ({cfg.get('source')})")
    print(f"  git:        {m.get('git_revision')}")
    t = m.get("thresholds", {})
    print(f"  thresholds: best F1 {t.get('best_f1')}, 90% efficiency {t.get('efficiency_90')} "
          f"(default {t.get('default')})")
    for dom, label in (("mc", "mc  "), ("data_hidden_truth", "data, hidden truth")):
        d = m.get("metrics", {}).get(dom)
        if d:
            print(f"  test {label}:  AUC {d.get('auc')}, efficiency {d.get('efficiency')}, purity {d.get('purity')}, "
                  f"rejection@90% {d.get('rejection_90')}")
    if "gap" in m.get("metrics", {}):
        g = m["metrics"]["gap"]
        print(f"  MC-Data efficiency gap (Data estimated without truth): {g.get('gap')} +- {g.get('gap_error')}"
              + ("" if g.get("estimable", True) else f" (not estimable: {g.get('reason')})"))
    if m.get("baseline_metrics"):
        print(f"  baseline:   {json.dumps(m['baseline_metrics'])[:200]}")
    print(f"  files:      {len(m.get('files', {}))} verified (sha256)")
    return 0


def run_resolve(args: argparse.Namespace) -> int:
    v = _registry(args).resolve(args.species, args.run, args.experiment)
    first, last = v.runs
    print(f"{v.id}\t{v.path}")
    print(f"  runs {first}-{last} ({', '.join(v.periods) or 'no period'}): {v.explain()}")
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    reg = _registry(args)
    v = reg.revoke(args.model_id, args.reason)
    if v is None:
        print(f"revoked {args.model_id} (its metadata is unreadable; it no longer blocks the other versions)")
        return 0
    print(f"revoked {v.id} ({v.revoked.get('revoked') if v.revoked else ''})")
    same = [o for o in reg.versions(v.id.experiment, v.id.species)
            if o.revoked is None and o.id != v.id and o.model_of == v.model_of]
    if same:
        print(f"  the same model ({v.model_of}) still serves through: "
              + ", ".join(f"{o.id} (runs {o.runs[0]}-{o.runs[1]})" for o in same)
              + "; revoke those too if the model itself is bad")
    return 0
