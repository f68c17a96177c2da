"""The contract: pydantic models of events, flows and API bodies.

The JSON Schema files in `schemas/json/` are generated from these models
(`python -m schemas.generate`) and checked against them in CI.
"""
