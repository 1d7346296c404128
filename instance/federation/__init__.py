"""Federation, host side: topics, the WebSub hub endpoint, subscriptions and the admin view.

One concept per module:

* ``urls`` - the topic and hub URLs of this instance;
* ``exports`` - which fields of an item are exported to whom;
* ``requester`` - who signed an incoming federation request;
* ``topics`` - ``GET {topic}``: the exported item document;
* ``hub_endpoint`` - ``POST {hub}``: subscribe / unsubscribe requests;
* ``subscriptions`` - the SQL behind ``hub.verifier.IntentStore`` and the queries on
  subscriptions;
* ``service`` - the per-app objects (outgoing HTTP, key resolver, verification worker);
* ``admin`` - ``GET /api/federation/subscriptions``.
"""
