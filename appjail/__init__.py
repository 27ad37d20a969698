"""appjail: run chosen programs in their own network namespace."""
