"""Reward sources ("signals"): verifiers, reward models, local judges and plugins, built from specs."""

from training.rewards.base import Signal, SignalEnv, SignalError
from training.rewards.registry import BUILTIN, GROUP, build, describe, plugins, registry

__all__ = ["BUILTIN", "GROUP", "Signal", "SignalEnv", "SignalError", "build", "describe", "plugins", "registry"]
