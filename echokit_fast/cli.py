"""Command line: `echokit-fast serve`, ..."""

from __future__ import annotations

import argparse
import sys

from echokit_fast import __version__


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="echokit-fast",
        description="Self-hosted voice-AI server for EchoKit devices.",
    )
    parser.add_argument("--version", action="version", version=f"echokit-fast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument(
        "--listen",
        type=_host_port,
        default=("0.0.0.0", 8080),
        metavar="HOST:PORT",
        help="address to listen on (default 0.0.0.0:8080)",
    )
    serve.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    return parser


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from echokit_fast.app import create_app

    host, port = args.listen
    # permessage-deflate must stay off: the EchoKit firmware rejects compressed frames.
    uvicorn.run(
        create_app(),
        host=host,
        port=port,
        log_level=args.log_level,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return cmd_serve(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
