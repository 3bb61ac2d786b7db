"""A promtool-style check of Prometheus rule files and PromQL, on the real PromQL grammar
(promql-parser), plus what Pricecast's metrics registry actually exports."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import promql_parser as pp

from services.common.metrics import ALL_METRICS, exported_names

DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
SEVERITIES = {"critical", "warning", "info"}
# Series Prometheus writes itself for every scrape target.
PROMETHEUS_SERIES = {"up": set()}
TEMPLATE_LABEL = re.compile(r"\$labels\.(\w+)")


@dataclass
class Selector:
    name: str
    labels: set[str]


@dataclass
class Parsed:
    selectors: list[Selector] = field(default_factory=list)
    grouping: list[set[str]] = field(default_factory=list)  # labels kept by each `by (...)`
    outer_by: set[str] | None = None  # labels kept by the outermost aggregation, if any


def metric_labels() -> dict[str, set[str]]:
    """Sample name -> label names it carries (histogram buckets also carry ``le``)."""
    labels: dict[str, set[str]] = {}
    exported = exported_names()
    for metric in ALL_METRICS:
        own = set(metric._labelnames)
        for family in metric.describe():
            for name in exported:
                if name == family.name or name.startswith(family.name + "_"):
                    labels[name] = own | ({"le"} if name.endswith("_bucket") else set())
    labels.update(PROMETHEUS_SERIES)
    return labels


def parse(expr: str) -> Parsed:
    """Parse ``expr`` (raises ValueError on bad syntax) and collect selectors and groupings."""
    tree = pp.parse(expr)
    out = Parsed()

    def visit(node: Any) -> bool:
        if isinstance(node, pp.VectorSelector):
            names = {m.name for m in node.matchers.matchers}
            out.selectors.append(Selector(node.name or "", names))
        modifier = getattr(node, "modifier", None) if isinstance(node, pp.AggregateExpr) else None
        if modifier is not None and modifier.type == pp.AggModifierType.By:
            out.grouping.append(set(modifier.labels))
        return True

    pp.walk(tree, visit)
    top: Any = tree
    while isinstance(top, pp.BinaryExpr | pp.ParenExpr):
        top = top.lhs if isinstance(top, pp.BinaryExpr) else top.expr
    if isinstance(top, pp.Call) and top.func.name == "histogram_quantile":
        top = top.args[1]
    if isinstance(top, pp.AggregateExpr):
        by = top.modifier
        out.outer_by = (
            set(by.labels) if by is not None and by.type == pp.AggModifierType.By else set()
        )
    return out


def check_expr(expr: str, where: str) -> list[str]:
    """Problems with ``expr``: syntax, unknown metrics, label names the metric does not have."""
    try:
        parsed = parse(expr)
    except ValueError as exc:
        return [f"{where}: PromQL syntax: {exc}"]
    known = metric_labels()
    problems = []
    for sel in parsed.selectors:
        if sel.name not in known:
            problems.append(f"{where}: metric {sel.name!r} is not exported by the code")
            continue
        allowed = known[sel.name] | {"job", "instance", "service", "pod"}
        bad = sel.labels - allowed
        if bad:
            problems.append(f"{where}: {sel.name} has no label(s) {sorted(bad)}")
    names = {s.name for s in parsed.selectors if s.name in known}
    carried = set().union(*(known[n] for n in names)) | {"job", "instance", "service", "pod"}
    for group in parsed.grouping:
        if group - carried:
            problems.append(f"{where}: groups by {sorted(group - carried)}, which no input has")
    if not parsed.selectors:
        problems.append(f"{where}: references no metric")
    return problems


def check_rule_file(doc: Any) -> list[str]:
    """Structural validation in the spirit of ``promtool check rules``."""
    problems: list[str] = []
    if not isinstance(doc, dict) or set(doc) != {"groups"}:
        return ["top level must be exactly {groups: [...]}"]
    group_names: set[str] = set()
    alert_names: set[str] = set()
    for g in doc["groups"]:
        name = g.get("name")
        if not name or name in group_names:
            problems.append(f"group name missing or duplicated: {name!r}")
        group_names.add(name)
        extra = set(g) - {"name", "rules", "interval", "limit"}
        if extra:
            problems.append(f"group {name}: unknown keys {sorted(extra)}")
        if "interval" in g and not DURATION.match(str(g["interval"])):
            problems.append(f"group {name}: bad interval {g['interval']!r}")
        if not g.get("rules"):
            problems.append(f"group {name}: no rules")
        for rule in g.get("rules", []):
            problems += _check_rule(rule, name, alert_names)
    return problems


def _check_rule(rule: dict[str, Any], group: str, seen: set[str]) -> list[str]:
    if ("alert" in rule) == ("record" in rule):
        return [f"group {group}: a rule needs exactly one of alert / record: {rule}"]
    kind = "alert" if "alert" in rule else "record"
    name = rule[kind]
    where = f"{group}/{name}"
    allowed = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
    if kind == "record":
        allowed = {"record", "expr", "labels"}
    unknown = set(rule) - allowed
    problems = [f"{where}: unknown keys {sorted(unknown)}"] if unknown else []
    pattern = r"[A-Za-z_][A-Za-z0-9_]*" if kind == "alert" else r"[a-zA-Z_:][\w:]*"
    if not re.fullmatch(pattern, name):
        problems.append(f"{where}: invalid name")
    if kind == "alert":
        if name in seen:
            problems.append(f"{where}: duplicate alert name")
        seen.add(name)
    expr = rule.get("expr")
    if not isinstance(expr, str) or not expr.strip():
        return [*problems, f"{where}: expr missing"]
    problems += check_expr(expr, where)
    for key in ("for", "keep_firing_for"):
        if key in rule and not DURATION.match(str(rule[key])):
            problems.append(f"{where}: bad {key} duration {rule[key]!r}")
    labels = rule.get("labels", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        problems.append(f"{where}: labels must map strings to strings")
    if kind == "alert":
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{where}: severity must be one of {sorted(SEVERITIES)}")
        notes = rule.get("annotations", {})
        for key in ("summary", "description"):
            if not notes.get(key):
                problems.append(f"{where}: annotation {key} missing")
        problems += _check_templates(where, expr, notes)
    return problems


def _check_templates(where: str, expr: str, notes: dict[str, str]) -> list[str]:
    """``{{ $labels.x }}`` must name a label the alert's series still carry."""
    try:
        parsed = parse(expr)
    except ValueError:
        return []
    if parsed.outer_by is None:
        known = metric_labels()
        kept = set().union(*(known.get(s.name, set()) for s in parsed.selectors))
        kept |= {"job", "instance"} | set().union(*(s.labels for s in parsed.selectors))
    else:
        kept = parsed.outer_by
    problems = []
    for key, text in notes.items():
        if text.count("{{") != text.count("}}"):
            problems.append(f"{where}: unbalanced template braces in {key}")
        for label in TEMPLATE_LABEL.findall(text):
            if label not in kept:
                problems.append(f"{where}: {key} uses $labels.{label}, dropped by the expression")
    return problems
