"""MLflow tracking: the store, stage and pipeline runs, provenance, lineage, the registry gate.

Import the modules themselves (`from clflow.tracking.runs import stage_run`): this package
imports nothing, so a stage depends (in `dvc.yaml`) only on the modules it uses.
"""
