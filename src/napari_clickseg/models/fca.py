"""Placeholder until the architecture lands."""
