"""The command line: ``canonical-raft`` / ``python -m canonical_raft``.

Subcommands: ``demo`` (a 3-process cluster that loses its leader),
``serve`` (one node process with the key-value client protocol), ``inspect``
(what a data dir holds), and the admin commands ``status``, ``add``, ``remove``,
``transfer`` (admin.py). Each module
adds its own options (``add_arguments``) and runs them (``run``). A command
with a parser of its own (``bench``) gets the rest of the command line.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __libraft_version__, __version__, admin, demo, inspector, server

#: name -> (module with main(argv) -> int, help). Imported only when run.
DELEGATED = {"bench": ("canonical_raft.bench", "benchmark canonical-raft against "
                                                "PySyncObj and a C ceiling")}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="canonical-raft",
                                description="Replicate a Python object with Raft.")
    p.add_argument("--version", action="version",
                   version=f"canonical-raft {__version__} (libraft {__libraft_version__})")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module, help in (
            ("demo", demo, "run a 3-process cluster, kill its leader, watch it recover"),
            ("serve", server, "run one node with a replicated key-value store"),
            ("inspect", inspector, "print a data dir's term, vote, log range, snapshot and "
                                   "configuration")):
        cmd = sub.add_parser(name, help=help, description=help)
        module.add_arguments(cmd)
        cmd.set_defaults(run=module.run)
    for name in admin.COMMANDS:
        cmd = sub.add_parser(name, help=admin.HELP[name], description=admin.HELP[name])
        admin.add_arguments(cmd, name)
    for name, (_, help) in DELEGATED.items():
        sub.add_parser(name, help=help, add_help=False)  # listed; main() hands it over
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:
        name = DELEGATED[argv[0]][0]
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            print(f"canonical-raft: '{argv[0]}' is not part of this installation",
                  file=sys.stderr)
            return 2
        return module.main(argv[1:])
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
