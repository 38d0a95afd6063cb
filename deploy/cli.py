"""`pedsearch stack ...` sub-commands (placeholder registration, filled by deploy.stack)."""


def register(subparsers) -> None:
    pass
