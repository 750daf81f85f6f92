"""A command-line client of the ptlab API, standard library only (urllib). See `python -m ptlab_client -h`."""

from ptlab_client.client import ApiError, Client

__all__ = ["ApiError", "Client"]
