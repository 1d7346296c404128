"""The multi-instance harness: real `fieldcast serve` processes on loopback ports.

* `RunningInstance` (``process.py``): one instance - its own data directory, database,
  keys and config, set up with ``fieldcast init`` and served with ``fieldcast serve`` as
  a user would; started, stopped, killed (-9) and restarted, its data kept; its faults
  (callback 500 / hang, a shifted clock) switched through the test-only settings.
* `Cluster` (``cluster.py``): N federating instances (SQLite each, or a PostgreSQL
  database each), started together and torn down together, even after a failure.
* `Client` (``client.py``): a typed HTTP client of one instance (an admin session).
* `LiveSocket` (``live.py``): a ``/live`` socket that keeps every frame it received.
* ``plugin.py``: the pytest hook that appends every running instance's log to the
  report of a failed test.
"""

from tests.harness.client import Client
from tests.harness.cluster import Cluster
from tests.harness.live import LiveSocket
from tests.harness.process import (
    ADMIN_PASSWORD,
    FAST_ENV,
    FEDERATION_ENV,
    RunningInstance,
    free_port,
    gather_limited,
)
from tests.harness.wait import eventually

__all__ = ["ADMIN_PASSWORD", "FAST_ENV", "FEDERATION_ENV", "Client", "Cluster", "LiveSocket",
           "RunningInstance", "eventually", "free_port", "gather_limited"]
