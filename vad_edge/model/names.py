"""The model's names, torch-free, so that the command line lists them without importing torch: the
profiles (network.PROFILES defines each) and the fusions (fusion.py fits each)."""

PROFILES = ("lite", "paper", "tiny")
FUSIONS = ("motion-cluster-speed-places", "motion-cluster-speed", "motion-cluster", "standardised", "paper")
