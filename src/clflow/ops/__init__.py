"""Plumbing above the library: entry points, the DVC runner, the Prefect tasks the flows are
made of, what a person sees of them (console, artifacts), team services and DVC remotes. Nothing
here learns; nothing in the library imports it.

Import the modules themselves (`from clflow.ops.dvcrun import repro_stage`): this package imports
nothing, so a stage depends (in `dvc.yaml`) only on the modules it uses.
"""
