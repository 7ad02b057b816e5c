"""Building blocks used by two architectures or more."""
