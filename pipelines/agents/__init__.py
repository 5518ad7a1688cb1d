"""Agents: gin-configurable factories for TF-Agents agents and their networks."""
