"""Environments: the lock a run's packages are resolved to, and the base image."""
