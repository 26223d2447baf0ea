"""The ground floor: atomic files (io), locks, service checks, code dependencies, progress and
parallel jobs. It imports nothing else of clflow (but its error type, clflow.errors), so every
other package may use it.

Import the modules themselves (`from clflow.util.io import write_json`): this package imports
nothing, so a stage depends (in `dvc.yaml`) only on the modules it uses.
"""
