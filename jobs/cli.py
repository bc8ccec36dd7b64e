"""`mmkg`: one click group composed from the modules in `jobs/commands/` (PyKEEN K6).

Each module in `mmkg.jobs.commands` exposes `commands: list[click.Command]`; heavy imports (torch,
Spark, faiss) happen inside the command bodies so `mmkg --help` stays fast. Errors caused by
the user's input or data print one line and a documented exit code, never a traceback.
"""
from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import re
import sys

import click

from mmkg.jobs.terminal import printable_lines
from mmkg.kg_store.errors import ConfigError, KGStoreError, LockedError, MMKGError

#: documented exit codes (README "Exit codes")
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_REJECTS, EXIT_LOCKED = 0, 1, 2, 3, 4


class StrictRejectsError(KGStoreError):
    """`--strict` was given and some input records were rejected."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option("--log-file", type=click.Path(dir_okay=False), default=None, help="Also write logs to this file.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Working copies of object-store KGs (--kg s3://...) and downloaded s3:// sources "
                   "(default: $MMKG_REMOTE_CACHE, else ~/.cache/mmkg/remote). See docs/OBJECT_STORAGE.md.")
def cli(verbose: int, log_file: str | None, cache_dir: str | None) -> None:
    """Multimodal KG pipeline: ingest → embed → index → retrieve → train/evaluate."""
    level = logging.WARNING - 10 * min(verbose, 2)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(level=level, handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    from mmkg.kg_store.remote import current_session
    if cache_dir and current_session() is not None:
        current_session().cache_dir = cache_dir


def _load_commands() -> None:
    import mmkg.jobs.commands as pkg
    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"mmkg.jobs.commands.{mod.name}")
        for command in getattr(module, "commands", []):
            cli.add_command(command)


_load_commands()


def exit_code(error: BaseException) -> int:
    """The documented exit code of an error reported as one line (README "Exit codes")."""
    for kind, code in ((LockedError, EXIT_LOCKED), (StrictRejectsError, EXIT_REJECTS), (ConfigError, EXIT_USAGE)):
        if isinstance(error, kind):
            return code
    return EXIT_FAILURE


#: `FORMAT:PATH` / `FORMAT(k=v,...):PATH` of `--source` (mmkg.pipeline.readers.base.parse_source)
_SOURCE = re.compile(r"^([^:(]+(?:\([^)]*\))?):(.+)$")


class KGLocation(click.ParamType):
    """Every command's `--kg`: a KG folder (made absolute: `snap-12:00` is a folder, not a URI),
    or an object-store URL, which the store resolves to its working copy for this command
    (mmkg.kg_store.remote: synced on first use, what the command commits published when it ends)."""

    def __init__(self, inner: click.ParamType, *, create: bool, verify: bool):
        self.inner, self.create, self.verify = inner, create, verify
        self.name = getattr(inner, "name", "directory")

    def convert(self, value, param, ctx):
        from mmkg.kg_store import remote
        if not isinstance(value, str) or not remote.is_url(value):
            out = self.inner.convert(value, param, ctx)
            return os.path.abspath(out) if isinstance(out, str) else out
        session = remote.current_session()
        if session is None:  # a command invoked outside `main` (click's own runner): read-only copy
            return str(remote.resolve_kg(value, create=False))
        wc = session.working_copy(value, verify=self.verify)
        for p in wc.problems:
            click.echo(f"BAD remote object {printable_lines(p)}", err=True)
        return str(remote.resolve_kg(value, create=self.create))


class SourceLocation(click.ParamType):
    """`--source FORMAT:URL`: the object is downloaded (mmkg.kg_store.remote) and read from there; its
    URL stays the provenance the published manifest records."""

    name = "source"

    def __init__(self, inner: click.ParamType):
        self.inner = inner

    def convert(self, value, param, ctx):
        from mmkg.kg_store import remote
        value = self.inner.convert(value, param, ctx)
        m = _SOURCE.match(value) if isinstance(value, str) else None
        if not m or not remote.is_url(m.group(2)):
            return value
        session = remote.current_session()
        local = session.source(m.group(2)) if session else remote.fetch_local_source(m.group(2))
        return f"{m.group(1)}:{local}"


def _accept_object_storage() -> None:
    """Give every command's `--kg` and `--source` the location types above (one place, so a new
    command gets object storage by declaring `--kg`)."""
    for name, command in cli.commands.items():
        for param in command.params:
            if param.name == "kg" and not isinstance(param.type, KGLocation):
                param.type = KGLocation(param.type, create=name in ("ingest", "run"), verify=name == "verify")
            elif param.name == "sources" and "--source" in param.opts and not isinstance(param.type, SourceLocation):
                param.type = SourceLocation(param.type)


_accept_object_storage()


def main(argv: list[str] | None = None) -> None:
    try:
        args = list(sys.argv[1:] if argv is None else argv)
        from mmkg.kg_store import remote
        with remote.session(hold_stdout=True) as session:  # object-store KGs: published when it ends
            cli.main(args=args, prog_name="mmkg", standalone_mode=False)
        sys.stdout.write(session.held.getvalue())
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(EXIT_FAILURE)
    except click.ClickException as e:
        e.message = printable_lines(e.message)  # a value from an input file or argument, shown escaped
        e.show()
        sys.exit(EXIT_USAGE if isinstance(e, click.UsageError) else EXIT_FAILURE)
    except (MMKGError, ImportError) as e:  # ImportError: an optional dependency, with its install hint
        # one escaping for every error line (reject lists, "no valid query", paths): mmkg.jobs.terminal
        click.echo(f"mmkg: {printable_lines(e)}", err=True)
        sys.exit(exit_code(e))
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    # `python -m mmkg.jobs.cli` runs this file as `__main__`, a second copy of the module: commands
    # import their errors from `mmkg.jobs.cli`, so run *that* module's main, or `except
    # StrictRejectsError` here would not match theirs (exit 1 instead of 3).
    from mmkg.jobs.cli import main as _main
    _main()
