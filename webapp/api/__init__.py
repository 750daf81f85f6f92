"""The REST API, with its OpenAPI schema and token authentication: experiments, runs, metrics and samples,
rating and the leaderboard, report downloads. Thin like the pages: access through
webapp.experiments.access, validation in the experiments form, writes in the apps' `do_*` actions."""
