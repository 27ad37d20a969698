"""Jails as resources with their undo: the Engine, addressing pool, persisted state."""
