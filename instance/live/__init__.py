"""The live side of the instance: ``/live`` for browsers and the hub behind it.

- ``backend``: the hub's view of the database (``hub.backend.LiveBackend``), from the
  change log and the rights tables.
- ``service``: the hub of this process, its broker, started and stopped with the app and
  registered as a listener of the change log.
- ``endpoint``: the ``/live`` WebSocket endpoint. The wire protocol is hub/LIVE.md.
"""
