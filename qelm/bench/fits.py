"""Scaling fits: least squares on log-log axes (time ~ a * T^k, and the factor per added qubit), used to
predict a length before it runs and to report how time grows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .settings import row_label

__all__ = ["fit_power_law", "fit_for", "predict", "scaling", "ok_groups"]


def fit_power_law(xs: Sequence[float], ys: Sequence[float]) -> dict[str, Any] | None:
    """Least squares of ``log y = log a + k log x``: ``{"exponent": k, "prefactor": a, "r2": ...}``, or
    None with fewer than two distinct x. ``y ~ a * x**k``."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len({p[0] for p in pts}) < 2:
        return None
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    k = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    b = my - k * mx
    ss_tot = sum((p[1] - my) ** 2 for p in pts)
    ss_res = sum((p[1] - (b + k * p[0])) ** 2 for p in pts)
    return {"exponent": k, "prefactor": math.exp(b), "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0}


def predict(fit: dict[str, float], x: float) -> float:
    return fit["prefactor"] * x ** fit["exponent"]


def fit_for(axis: str, xs: list[float], ys: list[float]) -> dict[str, Any] | None:
    """The model a prediction extrapolates: a power law in T (``axis="seq_len"``), an exponential in the
    qubit count (``"n_qubits"``: state vectors double per qubit). One point: the exponent is assumed
    (T^1, x2 per qubit), and the fit says so."""
    if axis == "n_qubits":  # log y = log a + n log b: a power-law fit of y against e^n
        fit: dict[str, Any] | None = fit_power_law([math.exp(x) for x in xs], ys)
        if fit is None and len(xs) >= 1:
            fit = {"exponent": math.log(2.0), "prefactor": ys[-1] / 2.0 ** xs[-1], "r2": None,
                   "assumed": "x2 per qubit (one measured point)"}
        if fit is not None:
            fit["describe"] = f"x{math.exp(fit['exponent']):.2f} per qubit"
            fit["x"] = math.exp
        return fit
    fit = fit_power_law(xs, ys)
    if fit is None and len(xs) >= 1:
        fit = {"exponent": 1.0, "prefactor": ys[-1] / xs[-1], "r2": None, "assumed": "T^1 (one measured length)"}
    if fit is not None:
        fit["describe"] = f"T^{fit['exponent']:.2f}"
        fit["x"] = float
    return fit


def ok_groups(rows: list[dict[str, Any]], *fields: str) -> dict[tuple, list[dict[str, Any]]]:
    """The rows that ran, grouped by the values of ``fields`` (in first-seen order)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if r["status"] == "ok":
            groups.setdefault(tuple(r[f] for f in fields), []).append(r)
    return groups


def scaling(rows: list[dict[str, Any]], qubit_rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    seq = []
    for (model, backend, mode), rs in ok_groups(rows, "model", "backend", "mode").items():
        fit = fit_power_law([r["seq_len"] for r in rs], [r["median_s"] for r in rs])
        if fit:
            seq.append({"model": model, "backend": backend, "label": row_label(model, backend), "mode": mode,
                        "seq_lens": [r["seq_len"] for r in rs], **fit,
                        "formula": f"time ~ T^{fit['exponent']:.2f}"})
    qub = []
    for (backend, mode, T), rs in ok_groups(qubit_rows, "backend", "mode", "seq_len").items():
        ns, ts = [r["n_qubits"] for r in rs], [r["median_s"] for r in rs]
        fit = fit_power_law(ns, ts)
        if fit:
            # exponential view: slope of log t vs n, i.e. the time factor per added qubit
            n_mean = sum(ns) / len(ns)
            l_mean = sum(math.log(t) for t in ts) / len(ts)
            slope = sum((n - n_mean) * (math.log(t) - l_mean) for n, t in zip(ns, ts)) / \
                sum((n - n_mean) ** 2 for n in ns)
            qub.append({"backend": backend, "label": row_label("qelm", backend), "mode": mode, "seq_len": T,
                        "qubits": ns, **fit, "per_qubit_factor": math.exp(slope),
                        "formula": f"time ~ n^{fit['exponent']:.2f} (x{math.exp(slope):.2f} per qubit)"})
    return {"seq_len": seq, "qubits": qub}
