"""The `depthcard` command line. Heavy libraries are imported by each command, not here."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import traceback
from pathlib import Path

from huggingface_hub import get_token

from depthcard.cli import audit_command, benchmark_command, bot_commands, estimate_command, logs
from depthcard.cli.errors import describe_error
from depthcard.schemas.errors import UserError


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage error is one line (exit 2), like every other user error;
    the full usage stays in `--help`. Subcommand parsers are of the same class."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="depthcard",
        description="Measure how deep the safety alignment of an open-weight model goes.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as text (watch and serve add a UTC time) or one JSON object each",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    audit = sub.add_parser("audit", help="audit a base/instruct pair (or --demo, --child-only)")
    audit_command.add_arguments(audit)
    audit.set_defaults(handler=audit_command.run)
    estimate = sub.add_parser("estimate", help="dry estimate of an audit's work and time")
    estimate_command.add_arguments(estimate)
    estimate.set_defaults(handler=estimate_command.run)
    gguf = sub.add_parser("import-gguf", help="convert a GGUF checkpoint to a safetensors folder")
    gguf.add_argument("file", type=Path, help="the .gguf file")
    gguf.add_argument("--out", type=Path, default=None, help="folder (default: the cache)")
    gguf.set_defaults(handler=_import_gguf)
    from depthcard.cli import space_command as space_command

    space = sub.add_parser("space", help="launch the Space (Gradio app) locally")
    space_command.add_arguments(space)
    space.set_defaults(handler=space_command.run)
    from depthcard.lab import calibration_suite

    calibrate = sub.add_parser("calibrate", help="train, audit and score the organism family")
    calibration_suite.add_arguments(calibrate)
    calibrate.set_defaults(handler=calibration_suite.run)
    bot_commands.add_parsers(sub)
    bench = sub.add_parser(
        "publish-benchmark", help="publish the prompt sets as a Hub benchmark dataset"
    )
    benchmark_command.add_arguments(bench)
    bench.set_defaults(handler=benchmark_command.run)
    return parser


def _import_gguf(args, token: str | None) -> int:
    from depthcard.analysis.gguf_import import cached_conversion, convert_gguf

    if not args.file.is_file():
        raise UserError(f"{args.file}: no such GGUF file")
    if importlib.util.find_spec("gguf") is None:  # transformers reads GGUF files through it
        raise UserError(
            'import-gguf needs the gguf package: install the gguf extra (pip install ".[gguf]")'
        )
    out = convert_gguf(args.file, args.out) if args.out else cached_conversion(args.file)
    print(out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point. Errors by kind: a `UserError` (bad input) is one line on stderr and exit
    2, never a traceback, also under -v; anything else is a bug: an "internal error" line,
    the traceback, and exit 1."""
    args = build_parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    logs.configure(level, args.log_format, args.command)
    # huggingface_hub's own lookup, as the `hf` CLI does: HF_TOKEN, then the `hf auth login` one.
    token = get_token()
    try:
        return args.handler(args, token)
    except KeyboardInterrupt:
        print("depthcard: interrupted", file=sys.stderr)
        return 130
    except UserError as exc:
        print(f"depthcard: error: {describe_error(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug, not a mistake of the user: keep its traceback
        print(f"depthcard: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
