"""``bgpspeaker controller``: hands out LoadBalancer VIPs from the config's address pools.

``settings`` (the ``controller:`` config section), ``claims`` (a Service as the
allocator sees it) and ``allocate`` (the allocator) are pure; ``leader`` (Lease
election), ``writer`` (status and Events) and ``run`` (the process) are the shell.
This file imports nothing: the speaker's config parser imports ``settings``."""
