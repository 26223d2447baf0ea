"""The baseline methods TAME is measured against (finetune, replays, ER-ACE, DER, DER++, GDumb,
joint: methods.py) and the predictions they store for the retrieval stage (predictions.py).

Import the modules themselves (`from clflow.baselines.methods import run_baselines`).
"""
