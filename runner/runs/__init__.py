"""Runs after the hand-over: the owner, ownership and reconcile, stop, sessions."""
