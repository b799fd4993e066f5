"""Run the Argo CD health check the way Argo CD does: Lua 5.1, ``obj`` as the only input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lupa import lua51

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "argocd" / "health-pipelinerun.lua"

# Argo CD's gopher-lua sandbox opens base, table, string and math (and a safe os); the
# check runs with only these globals, so a typo'd global is an error, not a silent nil.
_SANDBOX = """
local source, obj = ...
local fn, err = loadstring(source, "=health-pipelinerun.lua")
if fn == nil then error(err) end
local env = {obj = obj, ipairs = ipairs, pairs = pairs, tostring = tostring, tonumber = tonumber,
             type = type, next = next, table = table, string = string, math = math, error = error,
             pcall = pcall, select = select, unpack = unpack}
setmetatable(env, {__index = function(_, k) error("health check reads unknown global " .. tostring(k), 2) end,
                   __newindex = function(_, k) error("health check writes global " .. tostring(k), 2) end})
setfenv(fn, env)
return fn()
"""


class HealthCheck:
    """The Lua health check, loaded once."""

    def __init__(self, source: str | None = None) -> None:
        self.lua = lua51.LuaRuntime(unpack_returned_tuples=True)
        assert self.lua.eval("_VERSION") == "Lua 5.1"
        self.source = source if source is not None else SCRIPT.read_text()
        self._run = self.lua.eval("function(...) " + _SANDBOX + " end")

    def __call__(self, obj: dict[str, Any]) -> dict[str, str]:
        result = self._run(self.source, self.lua.table_from(obj, recursive=True))
        return {k: v for k, v in dict(result).items()}
