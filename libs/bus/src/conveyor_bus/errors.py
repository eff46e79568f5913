"""Errors of the bus.

BusError
├── TopicSetupError   topics could not be created
└── PublishError      a produce was not acknowledged
"""


class BusError(Exception):
    pass


class TopicSetupError(BusError):
    pass


class PublishError(BusError):
    pass
