"""Hierarchy files: YAML declarations of models, tools and agents, validated by pydantic (schema.py) and by
cross-reference checks (loader.py) before anything runs."""
