"""A digest of a step's compiled code: part of the definition fingerprint.

Editing a step's body without bumping ``@step(version=)`` used to resume with the
outputs of the old code. The digest covers what the compiler made of the function:
its bytecode, constants (nested functions, lambdas and comprehensions included),
the names and variables it uses. Comments, blank lines and moving the function do
not change it (line numbers live outside the bytecode).

Limits, also in docs/runtime.md: code the step *calls* (a helper function, a library)
is not seen, nor are default argument values or global constants it reads; bump the
step's ``version`` (or the pipeline's) for those. The bytecode belongs to one Python
minor version, so a new interpreter (3.11 -> 3.12 in the image) counts as a change.
"""

from __future__ import annotations

import hashlib
import types
from collections.abc import Callable
from typing import Any


def _const(value: Any) -> str:
    """A process-independent text of a code constant (frozenset order depends on the hash seed)."""
    if isinstance(value, types.CodeType):
        return "code:" + _code(value)
    if isinstance(value, frozenset):
        return "frozenset(" + ",".join(sorted(_const(v) for v in value)) + ")"
    if isinstance(value, tuple):
        return "(" + ",".join(_const(v) for v in value) + ")"
    return f"{type(value).__name__}:{value!r}"


def _code(code: types.CodeType) -> str:
    h = hashlib.sha256()
    for part in (
        code.co_code,
        repr(code.co_names).encode(),
        repr(code.co_varnames).encode(),
        repr(code.co_freevars).encode(),
        repr(code.co_cellvars).encode(),
        repr((code.co_argcount, code.co_kwonlyargcount, code.co_flags)).encode(),
    ):
        h.update(len(part).to_bytes(8, "big") + part)
    for const in code.co_consts:
        text = _const(const).encode()
        h.update(len(text).to_bytes(8, "big") + text)
    return h.hexdigest()


def code_digest(fn: Callable[..., Any]) -> str:
    """16 hex digits that change when the function's compiled code changes."""
    code = getattr(getattr(fn, "__wrapped__", fn), "__code__", None)
    if not isinstance(code, types.CodeType):
        return "no-code"  # a builtin or C callable: only its version speaks for it
    return _code(code)[:16]
