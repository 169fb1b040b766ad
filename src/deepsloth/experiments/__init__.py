"""Experiments: plain functions over the library (audit, ...)."""
