"""Command-line interface: ``medcap --help``."""
from __future__ import annotations

import errno
import importlib
import sys

from ..errors import MedcapError
from .app import app

# Command modules register themselves on the groups in app.py when imported.
_COMMAND_MODULES = ["data", "synth", "concepts", "captions", "evaluation", "demo", "factcheck", "ensemble", "export",
                    "hub"]


def _load_commands() -> None:
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":  # a real missing dependency: let it show
                raise


_GLOBAL_FLAGS = ("--verbose", "--no-verify")


def _global_options(argv: list[str]) -> tuple[list[str], bool]:
    """-> (arguments, verbose). Bare ``medcap`` shows the help (exit 0); the global flags
    (:data:`_GLOBAL_FLAGS`) are taken anywhere before ``--`` (users type them after the command
    too) and moved to the front."""
    if not argv:
        return ["--help"], False
    end = argv.index("--") if "--" in argv else len(argv)
    given = [f for f in _GLOBAL_FLAGS if f in argv[:end]]
    rest = [a for i, a in enumerate(argv) if not (a in _GLOBAL_FLAGS and i < end)]
    return [*given, *rest], "--verbose" in given


def _positional_hint(e: Exception, ctx) -> str | None:
    """``data check --data DIR``: the flag names a positional argument -> how to pass it."""
    import difflib

    name = str(getattr(e, "option_name", "") or "").lstrip("-").replace("-", "_")
    if type(e).__name__ != "NoSuchOption" or ctx is None or not name:
        return None
    for p in ctx.command.params:
        if getattr(p, "param_type_name", "") == "argument" and (
                p.name.startswith(name) or name.startswith(p.name) or difflib.get_close_matches(name, [p.name])):
            meta = p.name.upper()
            return (f"--{name.replace('_', '-')} is not an option: {meta} is a positional argument, given without "
                    f"a flag: {ctx.command_path} {meta} [OPTIONS]")
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``medcap`` console script."""
    _load_commands()
    from ..models import weights
    from ..progress import quiet_libraries

    argv, verbose = _global_options(list(sys.argv[1:] if argv is None else argv))
    verify = weights.verifying()
    try:
        # standalone_mode=False: click returns a command's exit code instead of exiting.
        with quiet_libraries(verbose):  # transformers' load bars and warnings: only with --verbose
            rc = app(args=argv, prog_name="medcap", standalone_mode=False)
    except MedcapError as e:
        print(f"error: {e.format()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        line = os_error_line(e)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 1
    except SystemExit as e:  # typer/click exits (--help, usage errors)
        return int(e.code or 0)
    except Exception as e:
        # Usage errors come as click's ClickException (typer vendors click, so match by
        # shape rather than by class): print click's short message, not a traceback.
        if callable(getattr(e, "format_message", None)) and isinstance(getattr(e, "exit_code", None), int):
            ctx = getattr(e, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            line = _positional_hint(e, ctx) or f"{e.format_message()}{hint}"
            print(f"error: {line}".replace("\n", " "), file=sys.stderr)
            return e.exit_code
        if type(e).__name__ == "Abort":
            return 1
        raise
    finally:
        weights.set_verify(verify)  # --no-verify holds for this command only (in-process callers)
    return rc if isinstance(rc, int) else 0


# Faults of the disk or of the paths given, not of medcap: one line, as for MedcapError. The write
# helpers of medcap.fileio leave nothing half-written when they fail.
_OS_ERRORS = {
    errno.EROFS: "the disk is read-only: write somewhere else",
    errno.ENOSPC: "no space left on the disk: free some space or write elsewhere (nothing was half-written)",
    errno.EDQUOT: "disk quota exceeded: free some space or write elsewhere",
    errno.EIO: "input/output error (a failing disk or a lost network mount): nothing was half-written",
    errno.EISDIR: "is a folder; expected a file path",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTEMPTY: "a folder is in the way (not empty)",
    errno.EEXIST: "already exists",
    errno.EXDEV: "cannot move across disks",
    errno.ENAMETOOLONG: "the path is too long",
}


def os_error_line(e: OSError) -> str | None:
    """One line for a disk or path fault (which file, what to do), or None for other OSErrors."""
    what = _OS_ERRORS.get(e.errno)
    if what is None:
        return None
    where = e.filename if e.filename is not None else ""
    return f"{where}: {what}" if where else what


def run() -> None:
    sys.exit(main())
