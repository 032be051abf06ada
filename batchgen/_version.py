"""The one version source (pyproject.toml reads it too)."""

__version__ = "0.2.0"
