"""The cluster as bgpspeaker sees it: the API server, the watchers, the store, the model.

- ``api``: requests on API paths through the official client; every response bounded
  and shape-checked (``list_page``, ``watch_event``) before use;
- ``watch``: one watcher per kind, in layers (reconnect with backoff, list then watch,
  one stream with an inactivity timeout);
- ``store``: what the watchers know, with a change log for the decision memo;
- ``model``: Services, EndpointSlices and Nodes reduced to what the decision needs (pure);
- ``access``: the RBAC each component needs, from the ``API_ACCESS`` tables beside the calls.
"""
