"""Pipelines shipped with the runtime, registered under the `respawn.pipelines` entry points."""
