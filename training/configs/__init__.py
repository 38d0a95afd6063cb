"""Packaged training configurations (``base.yaml``, ``tiny.yaml``, ``default.yaml``); a package so
that wheels carry the YAML files (``[tool.setuptools.package-data]``)."""
