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
    checks: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_terms(expr):
        m = _SET_TERM.match(term)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                checks.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif "==" in term or "=" in term:
            key, value = (s.strip() for s in re.split(r"==?", term, maxsplit=1))
            checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif term.startswith("!"):
            absent = term[1:].strip()
            checks.append(lambda labels, k=absent: k not in labels)
        elif re.match(r"^[A-Za-z0-9./_-]+$", term):
            checks.append(lambda labels, k=term: k in labels)
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
    return lambda labels: all(c(labels) for c in checks)


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
    checks: list[Callable[[Obj], bool]] = []
    for term in _split_terms(expr):
        m = re.match(r"^([^!=]+)(==|!=|=)(.*)$", term)
        if not m:
            raise ApiError(400, "BadRequest", f"invalid field selector: {term!r}")
        field, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
        if field not in allowed and not any(a.endswith(".*") and field.startswith(a[:-1]) for a in allowed):
            raise ApiError(400, "BadRequest", f'field label not supported: {field}')
        if op == "!=":
            checks.append(lambda o, f=field, v=value: str(_dotted(o, f) or "") != v)
        else:
            checks.append(lambda o, f=field, v=value: str(_dotted(o, f) or "") == v)
    return lambda obj: all(c(obj) for c in checks)
