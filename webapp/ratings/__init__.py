"""Blind pairwise rating of runs' outputs: the arena that picks pairs of completions on the same prompt,
the votes, the Bradley-Terry leaderboard with bootstrap intervals, rater agreement and position bias,
and the invitations that let other users rate an experiment."""
