"""appjail: run chosen programs in their own network namespace."""

# The one place the version lives: pyproject reads it, debian/changelog must agree
# (tests/unit/test_packaging.py), `appjail --version` prints it.
__version__ = "0.1.0"
