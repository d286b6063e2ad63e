"""Synthetic extracts for demos, tests and benchmarks: a register, a DMP extract and their faults.csv."""

from console.synth.generate import REFERENCE_DATE, SynthSummary, generate

__all__ = ["REFERENCE_DATE", "SynthSummary", "generate"]
