"""Pins on other libraries' internals (MLflow, Lightning, uvicorn), one test file per adapter.

``scripts/compat`` runs this folder against the newest released MLflow, Lightning and uvicorn.
"""
