"""The ``iapdcnn`` command: one subcommand per job, each a module with ``add_arguments(parser)``
and ``run(args)`` (and optionally ``ERRORS``: its exceptions whose message says it all, which
end the command with that message and status 1 instead of a traceback). Add a subcommand by adding a line to ``COMMANDS``; modules import lazily, so
``iapdcnn --help`` starts neither TensorFlow nor Horovod."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

# name -> (module under iapdcnn, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "preprocess": ("preprocess", "MHO-PFES features: NLM + edges + FCI screening to TFRecords"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` and runs the chosen subcommand; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="iapdcnn", description="IA-PDCNNOA tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        if name == chosen:  # import only the module that runs
            importlib.import_module(f"iapdcnn.{module}").add_arguments(p)
    args = parser.parse_args(argv)
    mod = importlib.import_module(f"iapdcnn.{COMMANDS[args.command][0]}")
    try:
        result = mod.run(args)
    except getattr(mod, "ERRORS", ()) as e:
        parser.exit(1, f"iapdcnn {args.command}: {e}\n")
    if isinstance(result, dict) and args.command == "preprocess":
        keys = ("images_in", "images_out", "time_s", "images_per_s")
        print(json.dumps({k: result.get(k) for k in keys}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
