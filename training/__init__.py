"""ptlab's training core: one run from a config, evaluated the same way whatever the method.

Never imports Django: the web app's worker calls `training.runner.run(cfg, sink, out_dir)`."""
