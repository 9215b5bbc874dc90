"""The chaos suite: faults injected into real processes, then an exact account (make chaos)."""
