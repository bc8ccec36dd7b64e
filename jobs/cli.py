"""`mmkg`: one click group composed from the modules in `jobs/commands/` (PyKEEN K6).

Each module in `jobs.commands` exposes `commands: list[click.Command]`; heavy imports (torch,
Spark, faiss) happen inside the command bodies so `mmkg --help` stays fast. Errors caused by
the user's input or data print one line and a documented exit code, never a traceback.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import pkgutil
import re
import sys

import click

from jobs.terminal import printable_lines
from kg_store.errors import ConfigError, KGStoreError, LockedError, MMKGError

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


#: `FORMAT:PATH` / `FORMAT(k=v,...):PATH` of `--source` (pipeline.readers.base.parse_source)
_SOURCE = re.compile(r"^([^:(]+(?:\([^)]*\))?):(.+)$")


def _option_values(args: list[str], name: str) -> list[tuple[int, str]]:
    """(index of the token holding the value, value) of every `NAME VALUE` / `NAME=VALUE` in args."""
    out = []
    for i, tok in enumerate(args):
        if tok == name and i + 1 < len(args):
            out.append((i + 1, args[i + 1]))
        elif tok.startswith(name + "="):
            out.append((i, tok[len(name) + 1:]))
    return out


def _set_value(args: list[str], i: int, name: str, value: str) -> None:
    args[i] = f"{name}={value}" if args[i].startswith(name + "=") else value


def _config_kg(args: list[str]) -> str | None:
    """`job.kg` of the `--config` of `mmkg run` (None when absent or unreadable: `run` reports it)."""
    from jobs.config import read_config
    configs = _option_values(args, "--config")
    if not configs:
        return None
    try:
        _, job = read_config(configs[-1][1], kind="pipeline config")
    except MMKGError:
        return None
    kg = job.get("kg")
    return kg if isinstance(kg, str) else None


@contextlib.contextmanager
def object_store_args(argv: list[str]):
    """The one place that maps object-store URLs to local paths (kg_store.remote).

    `--kg s3://bucket/prefix` becomes the local working copy of that store (synced to its
    committed version; what the command commits is published when it ends) and every
    `--source FORMAT:s3://bucket/key` a downloaded copy. Arguments without URLs pass through.
    With a `--kg` URL the command's standard output is held back until the publish succeeded:
    a writer that lost the publish race (exit 4) prints no success summary.
    """
    from kg_store.remote import is_url
    split = next((i for i, tok in enumerate(argv) if tok in cli.commands), len(argv))
    head, rest = argv[:split], list(argv[split:])
    for i, v in _option_values(rest, "--kg"):
        if v and not is_url(v):  # `snap-12:00` is a folder: absolute, so no reader takes it for a URI
            _set_value(rest, i, "--kg", os.path.abspath(v))
    if rest[:1] == ["run"] and not _option_values(rest, "--kg"):
        kg = _config_kg(rest)
        if kg is not None and is_url(kg):  # `job.kg: s3://…` is handled exactly like `--kg s3://…`
            rest += ["--kg", kg]
    kgs = [(i, v) for i, v in _option_values(rest, "--kg") if is_url(v)]
    sources = [(i, m) for i, v in _option_values(rest, "--source")
               if (m := _SOURCE.match(v)) and is_url(m.group(2))]
    if not kgs and not sources:
        yield head + rest
        return
    from kg_store import remote
    cache = (_option_values(head, "--cache-dir") or [(0, None)])[-1][1]
    held = io.StringIO()
    with contextlib.ExitStack() as stack:
        wc = None
        if kgs:
            if len({v for _, v in kgs}) > 1:
                raise ConfigError("give one --kg URL")
            stack.enter_context(contextlib.redirect_stdout(held))  # left after the publish (LIFO)
            wc = stack.enter_context(remote.open_working_copy(
                kgs[0][1], cache_dir=cache, verify=bool(rest) and rest[0] == "verify"))
            for p in wc.problems:
                click.echo(f"BAD remote object {printable_lines(p)}", err=True)
            if wc.base is None and rest and rest[0] not in ("ingest", "run"):
                raise KGStoreError(f"{wc.remote.url} is not a KG store (no manifest.json there); "
                                   "create one with `mmkg ingest --kg URL`")
            for i, _ in kgs:
                _set_value(rest, i, "--kg", str(wc.path))
        for i, m in sources:
            local = wc.add_source(m.group(2)) if wc else remote.fetch_local_source(m.group(2), cache)
            _set_value(rest, i, "--source", f"{m.group(1)}:{local}")
        yield head + rest
    sys.stdout.write(held.getvalue())


def main(argv: list[str] | None = None) -> None:
    try:
        args = list(sys.argv[1:] if argv is None else argv)
        with object_store_args(args) as args:
            cli.main(args=args, prog_name="mmkg", standalone_mode=False)
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
        # one escaping for every error line (reject lists, "no valid query", paths): jobs.terminal
        click.echo(f"mmkg: {printable_lines(e)}", err=True)
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
