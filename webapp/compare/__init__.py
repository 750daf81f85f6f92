"""The comparison of runs: reward and KL curves with seed bands, the reward-vs-KL frontier, method panels,
the summary table and samples side by side, for one experiment or runs picked across experiments. `core/`
holds all of it on plain data, without Django (series, stats, view, one figure module per chart);
`loader` is the only code here that reads the database or keeps a cache; the pages are thin views over
the two. Reports and the API draw the same figures from the same core."""
