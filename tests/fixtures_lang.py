"""Session fixtures that run real stages (see conftest.py)."""
