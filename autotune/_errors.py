"""The one exception tree of autotune. Only the CLI catches it.

AutotuneError                 base: one line for the user, naming the problem and the fix
 ├── ConfigError              bad user input: flags, files, search-space YAML, study mismatch
 ├── JavaNotFoundError        no usable Java runtime (>= 17)
 ├── StorageError             the Optuna storage cannot be opened or used
 ├── ServerError              TorchServe failed to start, answer or stop
 │    └── DeploymentError     a model could not be registered / its workers did not come up
 ├── LoadTestError            the load generator could not run (unreachable target, bad input)
 └── HostBusyError            another run holds this host's measurement lock (``--no-wait``)
"""

from __future__ import annotations


class AutotuneError(Exception):
    """Base class of every error autotune raises on purpose."""


class ConfigError(AutotuneError):
    """Invalid user input: a flag, a file or a search-space YAML."""


class JavaNotFoundError(AutotuneError):
    """No Java runtime >= 17 was found."""


class StorageError(AutotuneError):
    """The Optuna storage cannot be opened or used."""


class ServerError(AutotuneError):
    """TorchServe failed to start, answer or stop."""


class DeploymentError(ServerError):
    """A model could not be registered or its workers did not come up."""


class LoadTestError(AutotuneError):
    """The load generator could not run."""


class HostBusyError(AutotuneError):
    """Another run is measuring on this host, and we were told not to wait for it."""
