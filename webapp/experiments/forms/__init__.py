"""The experiments app's forms, one module each: the new-experiment form (experiment.py) and the fields it
generates from training.config's field specs (fields.py), its ready example (example.py), the edit form
(edit.py), the list page's filters (listing.py) and the try-a-model form (trial.py)."""
