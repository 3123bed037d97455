"""bgpspeaker: announce Kubernetes LoadBalancer VIPs over BGP through a supervised ExaBGP."""

__version__ = "0.1.0"
