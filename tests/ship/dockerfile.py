"""A small Dockerfile reader: enough to check instructions without a Docker engine.

Handles comments, parser directives, line continuations, JSON (exec) and shell forms,
``--flag=value`` options and build stages. Heredocs are not supported (none are used).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    """One instruction: ``COPY --from=builder /a /b`` -> cmd COPY, flags {from: builder}, args [/a, /b]."""

    cmd: str
    raw: str
    line: int
    flags: dict[str, list[str]] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    json_form: bool = False


@dataclass
class Stage:
    """A ``FROM`` and everything up to the next one."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, cmd: str) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd == cmd]

    def last(self, cmd: str) -> Instruction | None:
        found = self.all(cmd)
        return found[-1] if found else None


def _logical_lines(text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    buf, start = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if (
            stripped.startswith("#")
            and not buf
            and not lines
            and stripped[1:].strip().split("=")[0] in ("syntax", "escape", "check")
        ):
            continue  # a parser directive
        if stripped.startswith("#") or (not stripped and not buf):
            continue  # comments may sit inside a continued instruction too
        if not buf:
            start = number
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        lines.append((start, buf.strip()))
        buf = ""
    if buf.strip():
        raise ValueError(f"line {start}: instruction ends with a line continuation")
    return lines


def parse(text: str) -> list[Stage]:
    """The stages of a Dockerfile; raises ValueError on what Docker would reject."""
    stages: list[Stage] = []
    global_args: list[Instruction] = []
    for number, line in _logical_lines(text):
        cmd, _, rest = line.partition(" ")
        cmd = cmd.upper()
        rest = rest.strip()
        inst = Instruction(cmd=cmd, raw=rest, line=number)
        if rest.startswith("["):
            try:
                inst.args = json.loads(rest)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {number}: {cmd} has broken JSON: {exc}") from None
            inst.json_form = True
        else:
            words = shlex.split(rest, posix=True) if cmd not in ("RUN", "CMD", "ENTRYPOINT") else rest.split()
            while words and words[0].startswith("--") and cmd in ("COPY", "ADD", "RUN", "FROM"):
                key, _, value = words.pop(0)[2:].partition("=")
                inst.flags.setdefault(key, []).append(value)
            inst.args = words
        if cmd == "FROM":
            if not inst.args:
                raise ValueError(f"line {number}: FROM without an image")
            name = inst.args[2] if len(inst.args) == 3 and inst.args[1].upper() == "AS" else None
            if len(inst.args) not in (1, 3):
                raise ValueError(f"line {number}: FROM takes `image [AS name]`")
            stages.append(Stage(base=inst.args[0], name=name))
        elif not stages:
            if cmd != "ARG":
                raise ValueError(f"line {number}: {cmd} before the first FROM")
            global_args.append(inst)
        else:
            stages[-1].instructions.append(inst)
    if not stages:
        raise ValueError("no FROM")
    return stages


def parse_file(path: Path) -> list[Stage]:
    return parse(path.read_text())


def global_arg_defaults(text: str) -> dict[str, str]:
    """``ARG NAME=value`` lines before the first FROM."""
    out: dict[str, str] = {}
    for _, line in _logical_lines(text):
        cmd, _, rest = line.partition(" ")
        if cmd.upper() == "FROM":
            break
        if cmd.upper() == "ARG":
            key, _, value = rest.strip().partition("=")
            out[key] = value
    return out
