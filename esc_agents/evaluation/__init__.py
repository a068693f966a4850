"""Metrics and reports over simulated runs."""
