"""The table of a sweep, its Pareto frontier and its verdict, all read from the study.

* ``trials``: every trial of the study, finished or not, with its parameters, state (complete, failed
  with its reason, lost, running, waiting), wall time and the keys of its three models.
* ``models``: every distinct model the trials measured, by key: the sampled configurations ("quantum"
  when a slot runs circuits, else "classical"), their classical twins ("twin"), their parameter-matched
  classical models ("matched") and the unigram model; each with its figures per seed and their mean,
  standard deviation (n - 1) and range over seeds.
* ``frontier``: the models no other model beats on both parameter count and mean validation perplexity.
* ``verdict``: one sentence: does any quantum configuration beat the classical model of equal
  parameters, by how much, with what spread over seeds. "The classical model of equal parameters" is the
  best classical model (any matched model, twin or all-classical configuration, at whatever learning rate
  the sweep gave it) with no more parameters (+2%); each quantum configuration is also set against its
  own matched model, trained with the same settings. Ratios are taken seed by seed (a seed draws the
  same batches for every model), then summarised.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from .space import parse_space
from .workers import worker_gone

__all__ = ["sweep_table", "trial_row", "trial_state", "pareto_frontier", "verdict", "config_label", "GOAL_RATIO"]

GOAL_RATIO = 1.05  # the goal: within 5% of (or better than) the matched classical model
MATCH_SLACK = 1.02  # "no more parameters" allows the 2% by which a matched model may exceed its QELM
CLASSICAL_KINDS = ("matched", "twin", "classical")
_ALIAS = {"embedding": "emb", "attention": "attn", "feed_forward": "ff", "embedding_circuit": "circuit",
          "n_qubits": "q", "circuit_layers": "L", "d_model": "d", "d_hidden": "hidden", "n_heads": "heads",
          "n_layers": "layers", "context_len": "ctx", "readout": "readout", "fidelity_method": "fidelity"}
_SHORT = {"quantum": "Q", "classical": "C", "fidelity": "F"}
_CIRCUIT_FIELDS = ("n_qubits", "circuit_layers", "embedding_circuit", "readout", "fidelity_method",
                   "adaptive_threshold", "backend", "shots")
_SUMMARISED = ("val_perplexity", "val_loss", "bits_per_character", "bits_per_byte", "top1_accuracy", "top5_accuracy",
               "distinct_1", "distinct_2", "repetition_rate", "tokens_per_s", "train_seconds")


def _uses_circuits(config: dict) -> bool:
    return "quantum" in (config.get("embedding"), config.get("feed_forward")) or config.get("attention") != "classical"


def config_label(config: dict, settings: dict, model_names: list[str], train_names: list[str]) -> str:
    """``emb=Q circuit=polar attn=Q ff=C q=4 L=2 d=16``: the searched fields of one model, compactly."""
    parts = []
    for name in model_names:
        if name not in config:
            continue
        if name in _CIRCUIT_FIELDS and not _uses_circuits(config):
            continue
        if name == "embedding_circuit" and config.get("embedding") != "quantum":
            continue
        value = config[name]
        parts.append(f"{_ALIAS.get(name, name)}={_SHORT.get(value, value) if isinstance(value, str) else value}")
    parts += [f"{name}={settings[name]:g}" if isinstance(settings.get(name), float) else f"{name}={settings.get(name)}"
              for name in train_names if name in settings]
    return " ".join(parts) or "base config"


def _stats(values: list[float]) -> dict[str, float | int | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values), "n": len(values)}


def trial_state(trial) -> str:
    """complete / failed (with a reason) / lost (its process died) / running / waiting."""
    state = trial.state.name.lower()
    if state == "fail":
        return "failed" if "error" in trial.user_attrs else "lost"
    if state == "running" and worker_gone(trial.user_attrs.get("worker", "")):
        return "lost"  # its process died; until a resume fails it, the storage still says running
    return state


def trial_row(trial) -> dict[str, Any]:
    """One trial as a row of the table: its number, state, parameters, value, wall time, reason of failure,
    and (when complete) the keys of its three models (their figures are under ``models``), which of the
    baselines it trained rather than copied, its QELM's parameters and its mean validation perplexities."""
    ua = trial.user_attrs
    record = ua.get("record")
    row: dict[str, Any] = {"number": trial.number, "state": trial_state(trial), "params": dict(trial.params),
                           "value": trial.value if trial.state.name == "COMPLETE" else None,
                           "wall_seconds": ua.get("wall_seconds"), "retry_of": trial.system_attrs.get("failed_trial")}
    if "error" in ua:
        row["error"] = ua["error"]
    if row["state"] == "lost":
        row["error"] = ua.get("lost", "its process stopped before the trial finished (killed or interrupted)")
    if row["state"] == "pruned" and "duplicate_of" in ua:
        row["error"] = f"not run: trial {ua['duplicate_of']} was running the same configuration"
    if record:
        q, m = record["qelm"]["seeds"], record["matched"]["seeds"]
        row.update(keys={role: record[role]["key"] for role in ("qelm", "twin", "matched")},
                   trained={role: record[role]["trained"] for role in ("twin", "matched")},
                   parameters=next(iter(q.values()))["parameters"],
                   val_perplexity=_stats([f["val_perplexity"] for f in q.values()])["mean"],
                   matched_val_perplexity=_stats([f["val_perplexity"] for f in m.values()])["mean"],
                   ratio_to_matched=record["ratio_to_matched"])
    return row


def pareto_frontier(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points (``parameters``, ``ppl``) that no other point beats on both: fewer or equal parameters
    and lower perplexity. Sorted by parameters."""
    frontier, best = [], math.inf
    for p in sorted((p for p in points if p["ppl"] is not None), key=lambda p: (p["parameters"], p["ppl"])):
        if p["ppl"] < best:
            frontier.append(p)
            best = p["ppl"]
    return frontier


def _models(trials: list, model_names: list[str], train_names: list[str]) -> dict[str, dict[str, Any]]:
    """Every distinct model the complete ``trials`` measured, by key, with its figures at each seed."""
    models: dict[str, dict[str, Any]] = {}
    for trial in trials:
        record = trial.user_attrs.get("record")
        if trial.state.name != "COMPLETE" or not record:
            continue
        settings = record["settings"]
        for role in ("qelm", "twin", "matched"):
            rec = record[role]
            kind = role if role != "qelm" else ("quantum" if _uses_circuits(rec["config"]) else "classical")
            m = models.setdefault(rec["key"], {
                "key": rec["key"], "kind": kind, "config": rec["config"], "settings": settings,
                "label": (config_label(rec["config"], settings, model_names, train_names) if role == "qelm"
                          else config_label(rec["config"], settings, ["d_model", "d_hidden"], train_names)
                          .replace("d=", f"{role} d=", 1)),
                "seeds": {}, "trials": []})
            for seed, figures in rec["seeds"].items():
                m["seeds"].setdefault(seed, figures)
            m["trials"].append(trial.number)
            if role == "qelm":
                m["matched_key"] = record["matched"]["key"]
                m["twin_key"] = record["twin"]["key"]
    for m in models.values():
        first = next(iter(m["seeds"].values()))
        m["parameters"], m["circuit_parameters"] = first["parameters"], first["circuit_parameters"]
        for name in _SUMMARISED:
            if any(name in f for f in m["seeds"].values()):
                m[name] = _stats([f.get(name) for f in m["seeds"].values()])
    for m in models.values():  # the QELM over its matched model, seed by seed (same seed: same batches)
        if "matched_key" in m:
            m["ratio_to_matched"] = _paired(m, models[m["matched_key"]])
    for m in models.values():  # ... and over the best classical model the sweep trained with no more parameters
        if m["kind"] == "quantum":
            fits = _classical_within(models, m["parameters"])
            best = min(fits, key=lambda c: c["val_perplexity"]["mean"])
            m["classical_key"], m["classical_models"] = best["key"], len(fits)
            m["ratio_to_classical"] = _paired(m, best)
    return models


def _paired(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | int | None]:
    """``a``'s validation perplexity over ``b``'s, seed by seed (a seed draws the same batches for both)."""
    return _stats([f["val_perplexity"] / b["seeds"][s]["val_perplexity"] for s, f in a["seeds"].items()
                   if s in b["seeds"]])


def _classical_within(models: dict[str, dict[str, Any]], parameters: int) -> list[dict[str, Any]]:
    """The classical models (matched, twins, sampled all-classical configurations, at every learning rate
    the sweep tried) with at most ``parameters`` (+ the 2% matching tolerance)."""
    return [m for m in models.values() if m["kind"] in CLASSICAL_KINDS and m["parameters"] <= parameters * MATCH_SLACK]


def verdict(models: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any] | None]:
    """One sentence on the question the sweep answers, and the best quantum model (or ``None``).

    The quantum configuration named is the one closest to (or furthest below) the best classical model
    with no more parameters; "Yes" needs it below that model on every seed. Its ratio to its own matched
    model (trained with the same settings, so the same learning rate) follows, since the two differ when
    the classical model of equal parameters does better at a learning rate the quantum one did not use."""
    quantum = [m for m in models.values() if m["kind"] == "quantum" and m.get("ratio_to_classical", {}).get("n")]
    if not quantum:
        return "No quantum configuration finished, so the sweep cannot say whether one beats classical parameters.", None
    best = min(quantum, key=lambda m: m["ratio_to_classical"]["mean"])
    r, q, c = best["ratio_to_classical"], best["val_perplexity"], models[best["classical_key"]]
    rm = best["ratio_to_matched"]
    head = (f"of {len(quantum)} quantum configurations the closest, {best['label']} ({best['parameters']:,} parameters), "
            f"reaches validation perplexity {q['mean']:.3f} against {c['val_perplexity']['mean']:.3f} for "
            f"{_which(best['classical_models'])} with no more parameters ({c['label']}, {c['parameters']:,} parameters)")
    spread = _spread(r)
    paired = (f"; against its own matched model at the same settings it is {_percent(rm['mean'])} "
              f"({_spread(rm)})") if best["classical_key"] != best.get("matched_key") else ""
    if r["max"] < 1:
        return f"Yes: {head}, {_percent(r['mean'])} on every seed ({spread}){paired}.", best
    if r["mean"] < 1:
        return f"Not reliably: {head}, {_percent(r['mean'])} on average but not on every seed ({spread}){paired}.", best
    return f"No: {head}, {_percent(r['mean'])} ({spread}){paired}.", best


def _which(n: int) -> str:
    return ("the only classical model the sweep trained" if n == 1
            else f"the best of the {n} classical models the sweep trained")


def _percent(ratio: float) -> str:
    return f"{100 * (1 - ratio):.1f}% lower" if ratio < 1 else f"{100 * (ratio - 1):.1f}% higher"


def _spread(r: dict[str, Any]) -> str:
    if r["n"] < 2:
        return f"ratio {r['mean']:.3f} from 1 seed, so no spread"
    return f"ratio {r['mean']:.3f} ± {r['sd']:.3f} sd, range {r['min']:.3f}-{r['max']:.3f} over {r['n']} seeds"


def _budget(settings: dict) -> str:
    if "tokens" in settings:
        return f"a budget of {settings['tokens']:,} tokens"
    return f"{settings.get('steps')} steps"


def sweep_table(study) -> dict[str, Any]:
    """The sweep's JSON table: what was swept and how, every trial, every distinct model, the Pareto
    frontier (parameters vs mean validation perplexity) and the verdict."""
    attrs = study.user_attrs
    space = parse_space(attrs["space"], source=attrs.get("space_file", study.study_name))
    model_names = [d.name for d in space.dims if d.table == "model"]
    train_names = [d.name for d in space.dims if d.table == "train"]
    trials = study.get_trials(deepcopy=False)
    rows = [trial_row(t) for t in trials]
    models = _models(trials, model_names, train_names)
    corpus = attrs.get("corpus", {})
    unigram = attrs.get("unigram")
    if unigram:
        models["unigram"] = {"key": "unigram", "kind": "unigram", "label": "unigram (token frequencies; no seed)",
                             "parameters": corpus.get("vocab_size"), "circuit_parameters": 0,
                             "val_perplexity": {"mean": unigram["perplexity"], "sd": None, "min": unigram["perplexity"],
                                                "max": unigram["perplexity"], "n": 1},
                             **{k: v for k, v in unigram.items() if k.startswith("bits_per")}}
    points = [{"key": k, "parameters": m["parameters"], "ppl": m["val_perplexity"]["mean"]} for k, m in models.items()]
    frontier = [p["key"] for p in pareto_frontier(points)]
    sentence, best = verdict(models)
    states = [r["state"] for r in rows]
    counts = {s: states.count(s) for s in ("complete", "failed", "lost", "running", "waiting")}
    goal = None
    if best is not None:
        quantum = [m for m in models.values() if m["kind"] == "quantum" and m.get("ratio_to_matched", {}).get("n")]
        paired = min(quantum, key=lambda m: m["ratio_to_matched"]["mean"])
        goal = {"ratio_goal": GOAL_RATIO, "best_key": best["key"], "best_ratio": best["ratio_to_classical"]["mean"],
                "met": best["ratio_to_classical"]["mean"] <= GOAL_RATIO,
                "best_paired_key": paired["key"], "best_paired_ratio": paired["ratio_to_matched"]["mean"],
                "met_paired": paired["ratio_to_matched"]["mean"] <= GOAL_RATIO}
    settings = space.train
    return {
        "sweep": {"name": study.study_name, "space_file": attrs.get("space_file"), "space": attrs["space"],
                  "seeds": space.seeds, "sampler": space.sweep["sampler"], "sampler_seed": space.sweep["sampler_seed"],
                  "trials_target": space.sweep["trials"], "trials": counts, "distinct_models": len(models),
                  "searched": [d.describe() for d in space.dims]},
        "corpus": corpus,
        "method": (f"Each trial trains one configuration at seeds {space.seeds} ({_budget(settings)} unless searched, "
                   f"AdamW, batch {settings.get('batch_size')}) beside its classical twin (the same config, every slot "
                   f"classical) and its parameter-matched classical model (ClassicalLM.matched_to, within 2% of its "
                   f"parameters); at each seed all three draw the same initialisation seed and batches. Perplexity is "
                   f"exp of the mean cross-entropy over every token of the validation split (the corpus's last 10%). "
                   f"Figures over seeds are mean, sd (n - 1) and range; the ratio to the matched model is taken per "
                   f"seed, then summarised."),
        "verdict": sentence,
        "goal": goal,
        "frontier": frontier,
        "models": list(models.values()),
        "trials": rows,
    }
