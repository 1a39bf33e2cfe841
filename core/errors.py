"""Errors for user mistakes: each names where the problem is and how to fix it.

Command-line entry points catch DetrZooError and print its message without a traceback
(pass --debug to see one)."""


class DetrZooError(Exception):
    """Base of every error caused by user input (a graph, a dataset, a config, a checkpoint)."""

    exit_code = 2  # what a command line exits with

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


class Interrupted(DetrZooError):
    """Ctrl-C: the message says how to continue."""

    exit_code = 130  # the shell's code for SIGINT


class ResourceError(DetrZooError):
    """An input that exceeds a resource limit (pixels, memory, nesting), or a full or read-only disk."""


def explain(err: BaseException) -> DetrZooError | None:
    """What escaped a command, as one of our errors; None for a bug (which keeps its traceback)."""
    import errno

    if isinstance(err, DetrZooError):
        return err
    if isinstance(err, KeyboardInterrupt):
        return Interrupted("interrupted (Ctrl-C)", hint="rerun the command; a training run continues with "
                                                        "--auto-resume (or -r OUTPUT_DIR/last.pth)")
    if type(err).__name__ == "DecompressionBombError":  # PIL's pixel limit, before decoding a huge image
        return ResourceError(f"image too large: {err}",
                             hint="downscale the image, or raise PIL's limit (PIL.Image.MAX_IMAGE_PIXELS) if you "
                                  "trust the file")
    if isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and (
            "out of memory" in str(err) or "can't allocate memory" in str(err))):
        return ResourceError(f"out of memory: {str(err).splitlines()[0][:200]}",
                             hint="lower the batch size or the input size (imgsz)")
    if isinstance(err, RecursionError):
        return ResourceError("input nested too deeply to read", hint="a config or annotation file needs only a "
                                                                     "few levels of nesting")
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT):
        reason = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system"}.get(err.errno, "permission denied")
        return ResourceError(f"{reason}: {err.filename or ''}".rstrip(": "),
                             hint="free space, or write elsewhere (--output-dir / -o)")
    return None


def cli_main(main, debug_flag: str = "--debug"):
    """Run `main()`; an error the user can act on becomes `error:` and `fix:` lines and exit code 2
    (exit 130 for Ctrl-C). `--debug` shows the traceback instead."""
    import sys

    try:
        return main()
    except BaseException as err:  # noqa: BLE001 (SystemExit passes through below)
        if isinstance(err, SystemExit):
            raise
        known = explain(err)
        if known is None or debug_flag in sys.argv:
            raise
        print(f"error: {known}", file=sys.stderr)
        raise SystemExit(known.exit_code) from None


class DataError(DetrZooError):
    """A dataset that cannot be trained on correctly; `where` names the file (and line or ids)."""


class ArgumentError(DetrZooError, ValueError):
    """A constructor (a block, a transform) refusing its arguments: say which, and what it accepts."""
