"""Profiling: the event recorder every task uses, and the run report built from its events."""
