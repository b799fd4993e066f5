"""Label and field selectors."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from respawn_local.apiserver.common import ApiError, Obj


def _split_terms(expr: str) -> list[str]:
    terms, depth, cur = [], 0, ""
    for ch in expr:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        terms.append(cur.strip())
    return terms


_SET_TERM = re.compile(r"^(\S+)\s+(in|notin)\s*\((.*)\)$")


def parse_label_selector(expr: str | None) -> Callable[[dict[str, str]], bool]:
    """Compile a label selector string into a predicate over a labels dict."""
    if not expr:
        return lambda labels: True
    checks = [_label_requirement(term) for term in _split_terms(expr)]
    return lambda labels: all(c(labels) for c in checks)


def _label_requirement(term: str) -> Callable[[dict[str, str]], bool]:
    """One term of a label selector as a predicate."""
    m = _SET_TERM.match(term)
    if m:
        key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if "!=" in term:
        key, value = (s.strip() for s in term.split("!=", 1))
        return lambda labels: labels.get(key) != value
    if "==" in term or "=" in term:
        key, value = (s.strip() for s in re.split(r"==?", term, maxsplit=1))
        return lambda labels: labels.get(key) == value
    if term.startswith("!"):
        absent = term[1:].strip()
        return lambda labels: absent not in labels
    if re.match(r"^[A-Za-z0-9./_-]+$", term):
        return lambda labels: term in labels
    raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")


def _dotted(obj: Obj, path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def parse_field_selector(expr: str | None, allowed: Iterable[str]) -> Callable[[Obj], bool]:
    """Compile a field selector; unsupported fields are a 400 like the real server."""
    if not expr:
        return lambda obj: True
    allowed = set(allowed)
    checks = [_field_requirement(term, allowed) for term in _split_terms(expr)]
    return lambda obj: all(c(obj) for c in checks)


def _field_requirement(term: str, allowed: set[str]) -> Callable[[Obj], bool]:
    """One term of a field selector as a predicate."""
    m = re.match(r"^([^!=]+)(==|!=|=)(.*)$", term)
    if not m:
        raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
    field, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
    if field not in allowed and not any(a.endswith(".*") and field.startswith(a[:-1]) for a in allowed):
        raise ApiError(400, "BadRequest", f"field label not supported: {field}")
    if op == "!=":
        return lambda o: str(_dotted(o, field) or "") != value
    return lambda o: str(_dotted(o, field) or "") == value
