"""Federation, subscriber side: this instance's items mirroring items of other instances.

One concept per module:

* ``links`` - linking and unlinking an item: discovery, the first fetch, subscribe;
  the remote state the item API shows;
* ``callback`` - ``GET``/``POST {base_url}/federation/callback/{token}``: verification
  of intent, denials, notifications;
* ``mirror`` - fetched values into ``remote`` fields, through the change log;
* ``store`` - the SQL behind ``hub.fetcher.RemoteStore`` and the subscriptions' states;
* ``service`` - the per-app signer and fetch worker;
* ``api`` - ``PUT``/``DELETE /api/items/ID/link``, ``GET /api/federation/outgoing``.
"""
