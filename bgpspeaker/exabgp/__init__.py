"""ExaBGP as bgpspeaker's BGP speaker: one child process per peer behind the ``Session``
protocol.

- ``commands``: the text API's command lines, built from typed values (pure);
- ``render``: ExaBGP's config for one peer from the templates in ``exabgp-conf/``;
- ``supervisor``: the child process, its acknowledged command channel, restarts;
- ``privileges``: whom the child runs as (never root);
- ``diagnosis``: why a session does not come up;
- ``launcher``: ExaBGP's own ``main`` with bgpspeaker's patches (run in the child);
- ``relay``: the API helper ExaBGP's config names, relaying to the supervisor's unix socket;
- ``inprocess``: that relay's job inside ExaBGP (the launcher's ``--inprocess-relay``, one
  of the speed patches), so ExaBGP starts no relay process.

Import the modules themselves (``bgpspeaker.exabgp.supervisor``): this package file
imports nothing, so the launcher, run inside every ExaBGP child as
``python -m bgpspeaker.exabgp.launcher``, does not load the daemon's modules there
(measured: 4 MB of RSS per ExaBGP).
"""
