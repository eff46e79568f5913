"""Conveyor on Kubernetes: the resources of an installation made from a values file and the
topic catalog (`conveyor kube render`), and the profiles rendered into `deploy/kubernetes/`."""

from .render import consumed, group_id, max_replicas, render
from .values import PORTS, STREAM_SERVICES, Values, ValuesError, load

__all__ = [
    "PORTS",
    "STREAM_SERVICES",
    "Values",
    "ValuesError",
    "consumed",
    "group_id",
    "load",
    "max_replicas",
    "render",
]
