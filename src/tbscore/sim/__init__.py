"""Simulation for validation and samples: exact fBm phantoms, synthetic spines,
3-D trabecular microarchitecture and a DXA imaging model. Never imported by the
product path."""
