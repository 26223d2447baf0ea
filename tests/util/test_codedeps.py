"""clflow.util.codedeps: the pinned distributions of the modules a model's code imports."""

from __future__ import annotations

from importlib.metadata import version

from clflow.util.codedeps import pinned_requirements


def test_pinned_requirements_name_the_distribution_that_installs_each_module():
    pins = pinned_requirements({"mlflow", "torch", "yaml", "sklearn", "sentence_transformers"})
    assert pins == sorted(
        [
            f"mlflow=={version('mlflow')}",  # the distribution named as the module, not -skinny
            f"torch=={version('torch').split('+')[0]}",  # no local build tag (+cpu)
            f"PyYAML=={version('PyYAML')}",  # found through the installed file lists
            f"scikit-learn=={version('scikit-learn')}",
            f"sentence-transformers=={version('sentence-transformers')}",  # its own spelling
        ]
    )
