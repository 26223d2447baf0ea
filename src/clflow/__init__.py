"""clflow: continual-learning pipelines on DVC, Prefect and MLflow."""

__version__ = "0.1.0"
