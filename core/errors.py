"""Errors for user mistakes: each names where the problem is and how to fix it.

Command-line entry points catch DetrZooError and print its message without a traceback
(pass --debug to see one)."""


class DetrZooError(Exception):
    """Base of every error caused by user input (a graph, a dataset, a config, a checkpoint)."""

    def __init__(self, message: str, hint: str | None = None, where: str | None = None):
        self.message, self.hint, self.where = message, hint, where
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text}\n  fix: {self.hint}" if self.hint else text


class GraphError(DetrZooError):
    """A graph YAML that cannot be built; `where` names the file, row and module."""


class ConfigError(DetrZooError):
    """A run config (recipe) that is malformed or inconsistent."""


class CheckpointError(DetrZooError):
    """A checkpoint file that cannot be read or does not fit the model."""


def cli_main(main, debug_flag: str = "--debug"):
    """Run `main()` and turn a DetrZooError into a clean message and exit code 2."""
    import sys

    try:
        return main()
    except DetrZooError as err:
        if debug_flag in sys.argv:
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


class DataError(DetrZooError):
    """A dataset that cannot be trained on correctly; `where` names the file (and line or ids)."""


class ArgumentError(DetrZooError, ValueError):
    """A constructor (a block, a transform) refusing its arguments: say which, and what it accepts."""
