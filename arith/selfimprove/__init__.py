"""Self-improvement (Lee et al. 2025, arXiv 2502.01612): a trained run labels problems slightly longer than it
has learned with its own vote over Abacus offsets (and other runs'), keeps the answers the vote is sure of, and
trains on them, round after round. No true answer steers training. Entry: `scripts/self_improve.py`."""
