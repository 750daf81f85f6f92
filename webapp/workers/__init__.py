"""The worker runtime: what a Celery worker process does with a run id. The task claims the run and trains
it in a process forked for it (fresh_process), writing through a fenced sink; a supervisor thread beats,
reaps and resends; recovery decides what happens to a run whose worker or process went away. It imports
the experiments domain (models, actions) and never the other way round."""
