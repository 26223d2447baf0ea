"""Flower as clflow's federated engine.

`engine` (clflow's environment) starts a loopback SuperLink and one SuperNode per client from
.venv-flower and submits the app in `app/`; `apps` and `strategy` run inside Flower's
processes; `job` owns the files the two sides share. Only `job` and `engine` import without
flwr.
"""
