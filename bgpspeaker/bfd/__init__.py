"""BFD (RFC 5880/5881/5883) for the speaker: the packet, the session state machine, the
engine and its child process (``python -m bgpspeaker.bfd``), the config and the daemon's
client. Importing this package imports nothing else."""
