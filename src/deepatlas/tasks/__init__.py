"""Objectives and metrics shared by several architectures."""
