"""`mmkg`: one click group composed from the modules in `jobs/commands/` (PyKEEN K6).

Each module in `jobs.commands` exposes `commands: list[click.Command]`; heavy imports (torch,
Spark, faiss) happen inside the command bodies so `mmkg --help` stays fast. Errors caused by
the user's input or data print one line and a documented exit code, never a traceback.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil
import sys

import click

from kg_store.errors import ConfigError, KGStoreError, LockedError, MMKGError

#: documented exit codes (README "Exit codes")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_REJECTS, EXIT_LOCKED = 0, 1, 2, 3, 4


class StrictRejectsError(KGStoreError):
    """`--strict` was given and some input records were rejected."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option("--log-file", type=click.Path(dir_okay=False), default=None, help="Also write logs to this file.")
def cli(verbose: int, log_file: str | None) -> None:
    """Multimodal KG pipeline: ingest → embed → index → retrieve → train/evaluate."""
    level = logging.WARNING - 10 * min(verbose, 2)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=level, handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


def _load_commands() -> None:
    import jobs.commands as pkg
    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"jobs.commands.{mod.name}")
        for command in getattr(module, "commands", []):
            cli.add_command(command)


_load_commands()


def exit_code(error: BaseException) -> int:
    """The documented exit code of an error reported as one line (README "Exit codes")."""
    for kind, code in ((LockedError, EXIT_LOCKED), (StrictRejectsError, EXIT_REJECTS), (ConfigError, EXIT_USAGE)):
        if isinstance(error, kind):
            return code
    return EXIT_FAILURE


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="mmkg", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_FAILURE)
    except click.ClickException as e:
        e.show()
        sys.exit(EXIT_USAGE if isinstance(e, click.UsageError) else EXIT_FAILURE)
    except (MMKGError, ImportError) as e:  # ImportError: an optional dependency, with its install hint
        click.echo(f"mmkg: {e}", err=True)
        sys.exit(exit_code(e))
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    # `python -m jobs.cli` runs this file as `__main__`, a second copy of the module: commands
    # import their errors from `jobs.cli`, so run *that* module's main, or `except
    # StrictRejectsError` here would not match theirs (exit 1 instead of 3).
    from jobs.cli import main as _main
    _main()
