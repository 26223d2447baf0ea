"""Demonstration retrieval with FAISS (Mueller et al., 2023): a bank of labelled examples."""

from clflow.retrieval.bank import BankConfig, BankError, DemoBank, recall_at_k

__all__ = ["BankConfig", "BankError", "DemoBank", "recall_at_k"]
