"""The `depthcard` command line. Heavy libraries are imported by each command, not here."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from depthcard.cli import audit_command, bot_commands

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="depthcard",
        description="Measure how deep the safety alignment of an open-weight model goes.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)
    audit = sub.add_parser("audit", help="audit a base/instruct pair (or --demo, --child-only)")
    audit_command.add_arguments(audit)
    audit.set_defaults(handler=audit_command.run)
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
    return parser


def _import_gguf(args, token: str | None) -> int:
    from depthcard.analysis.gguf_import import cached_conversion, convert_gguf

    out = convert_gguf(args.file, args.out) if args.out else cached_conversion(args.file)
    print(out)
    return 0


def describe_error(exc: BaseException) -> str:
    """One line for a user-facing error; pydantic errors name the field and the problem."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "input"
        return f"{exc.title}: {where}: {first['msg']} ({exc.error_count()} error(s))"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line on stderr and exit 2 for bad input, never a traceback."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    token = os.environ.get("HF_TOKEN")
    try:
        return args.handler(args, token)
    except KeyboardInterrupt:
        print("depthcard: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        message = describe_error(exc)
        print(f"depthcard: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
