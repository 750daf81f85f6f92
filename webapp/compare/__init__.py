"""Comparison of runs: reward and KL curves, the reward-vs-KL frontier, method panels, summary, samples."""
