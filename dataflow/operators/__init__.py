"""Pipeline operators, at DataFlow-MM's import paths."""
