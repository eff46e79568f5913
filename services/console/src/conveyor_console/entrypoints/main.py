from ..bootstrap import bootstrap


def main() -> None:
    bootstrap().serve()
