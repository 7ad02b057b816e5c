"""Continuous-time and scientific models: networks for differential equations (issue 21)."""
