"""What a refused caller is told: the service answers each with its HTTP status."""


class AuthError(Exception):
    pass


class Unauthenticated(AuthError):
    """No bearer token, or one no entry holds (HTTP 401)."""


class Forbidden(AuthError):
    """A known caller whose roles or projects do not cover what they ask (HTTP 403)."""
