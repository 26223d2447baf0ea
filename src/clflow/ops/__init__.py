"""Plumbing: the DVC runner, locks, services, code dependencies, atomic files, entry points
and the Prefect tasks the flows are made of. Nothing here learns.

Import the modules themselves (`from clflow.ops.io import write_json`): this package imports
nothing, so a stage depends (in `dvc.yaml`) only on the modules it uses.
"""
