"""Runs, the results store, the report and its plots."""
