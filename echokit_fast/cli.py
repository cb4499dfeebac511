"""Command line: `echokit-fast serve`, `check-config`, `vad`, `transcribe`, `say`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from echokit_fast import __version__
from echokit_fast.server import logging as server_logging

if TYPE_CHECKING:
    from echokit_fast.config import Config

T = TypeVar("T")


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:  # 0: an ephemeral port
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
        "config_pos",
        nargs="?",
        metavar="CONFIG",
        help="config.toml to use (same as --config; the reference server's positional form)",
    )
    serve.add_argument(
        "--config",
        metavar="PATH",
        help="config.toml to use (default: $ECHOKIT_CONFIG, else $CONFIG_PATH; without any, the "
        "embedded default: local ASR and TTS, the LLM at --llm-url)",
    )
    serve.add_argument(
        "--listen",
        type=_host_port,
        default=None,
        metavar="HOST:PORT",
        help="address to listen on (default: $ECHOKIT_LISTEN, else the config's addr, else "
        "0.0.0.0:8080; port 0: an ephemeral port)",
    )
    serve.add_argument(
        "--llm-url",
        metavar="URL",
        help="OpenAI-compatible base URL for the embedded default (default: $OPENAI_BASE_URL, "
        "else http://localhost:9091/v1); ignored with a config file",
    )
    serve.add_argument(
        "--llm-model",
        metavar="MODEL",
        help="run the embedded default's LLM in-process (llama.cpp, the llm extra): a .gguf "
        "file, or REPO/FILE.gguf on the Hugging Face Hub (downloaded once); instead of "
        "--llm-url, ignored with a config file",
    )
    serve.add_argument(
        "--api-key",
        action="append",
        default=None,
        metavar="KEY",
        help="require Authorization: Bearer KEY on every /v1 API route and the downloads "
        "(repeat for more keys; default: $ECHOKIT_API_KEY, else the config's [server] api_key)",
    )
    serve.add_argument(
        "--config-write",
        action="store_true",
        default=None,
        help="let the console's config editor (/console/config) save the config file and "
        "apply it without a restart; only for a request with one of the API keys (default: "
        "$ECHOKIT_CONFIG_WRITE=1; off)",
    )
    serve.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve HTTPS and WSS with this certificate chain (PEM; with --tls-key; default: "
        "$ECHOKIT_TLS_CERT): a browser on another machine allows the talk page's microphone "
        "only over HTTPS",
    )
    serve.add_argument(
        "--tls-key",
        metavar="FILE",
        help="the private key of --tls-cert (PEM, unencrypted; default: $ECHOKIT_TLS_KEY)",
    )
    serve.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long running turns may finish (default 10)",
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=None,
        metavar="N",
        help="serve with N processes, each device's requests on one of them (default: "
        "$ECHOKIT_WORKERS, else 1): more devices per machine, N times the memory; not with "
        "TLS or --config-write (docs/deploy.md)",
    )
    # a worker of --workers, as the supervisor starts it: INDEX:COUNT:FD
    serve.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    serve.add_argument(
        "--log-level",
        choices=server_logging.LEVELS,
        default=None,
        help="level of every logger (default: $ECHOKIT_LOG_LEVEL, else info)",
    )
    serve.add_argument(
        "--log-format",
        choices=server_logging.FORMATS,
        default=None,
        help="text lines, or one JSON object per line (default: $ECHOKIT_LOG_FORMAT, else text)",
    )

    check = sub.add_parser(
        "check-config",
        help="validate a config.toml and print a summary",
        description="Validate a config.toml: print its layout, platforms and address, and any "
        "warnings (unknown keys ...). Exit status 0 if it can be used, 1 if not.",
    )
    check.add_argument("path", metavar="PATH", help="the config.toml to check")

    say = sub.add_parser(
        "say",
        help="speak a text into a WAV file with the embedded TTS",
        description="Synthesize TEXT (or stdin with '-') with the embedded TTS engine and write "
        "a 16-bit mono WAV.",
    )
    say.add_argument("text", nargs="?", default="-", help="the text ('-' or omitted: stdin)")
    say.add_argument("-o", "--output", default="say.wav", help="WAV file to write (say.wav)")
    say.add_argument("--engine", default="hibari", help="hibari (default) or piper")
    say.add_argument("--voice", help="voice name (default: the engine's); see --list-voices")
    say.add_argument("--rate", type=int, help="sample rate in Hz (default: the engine's own)")
    say.add_argument("--speed", type=float, default=1.0, help="1.0 normal, 0.25..4")
    say.add_argument("--list-voices", action="store_true", help="print the voices and exit")

    vad = sub.add_parser(
        "vad",
        help="print the speech segments of a WAV file as JSON",
        description="Silero VAD over a WAV file (8..48 kHz, any channels/format read_wav reads); "
        'prints {"timestamps": [{"start", "end"}]} in 16 kHz sample indices, as '
        "POST /v1/audio/vad answers. Exit status 1 if the file cannot be used.",
    )
    vad.add_argument("path", metavar="FILE.wav", help="the WAV file")
    vad.add_argument("--threshold", type=float, default=0.5, help="speech threshold (0.5)")
    vad.add_argument("--min-speech-duration-ms", type=float, default=250, help="(250)")
    vad.add_argument("--min-silence-duration-ms", type=float, default=100, help="(100)")
    vad.add_argument("--speech-pad-ms", type=float, default=30, help="(30)")
    vad.add_argument("--model", choices=("v5", "v6"), default="v6", help="Silero VAD weights (v6)")

    tr = sub.add_parser(
        "transcribe",
        help="transcribe an audio file with the embedded Whisper engine",
        description="Print the text of an audio file (WAV of any rate and channel count, or "
        "any format FFmpeg reads) transcribed by the embedded Whisper engine.",
    )
    tr.add_argument("file", metavar="FILE", help="the audio file (e.g. speech.wav)")
    tr.add_argument("--language", help="pin the language (e.g. en); default: detect")
    tr.add_argument(
        "--model",
        default="base",
        help="a model name (base, small ...), a CTranslate2 model directory (default: base, "
        "from the installed model package when present)",
    )
    tr.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    tr.add_argument("--beam-size", type=int, default=1, metavar="N")
    return parser


def cmd_transcribe(args: argparse.Namespace) -> int:
    import asyncio

    from echokit_fast.audio import decode_file
    from echokit_fast.backends.asr.local import LocalASR
    from echokit_fast.backends.asr.local.engine import LocalWhisper, ModelNotFound
    from echokit_fast.backends.base import BackendError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:  %(name)s: %(message)s")
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    try:
        with open(args.file, "rb") as f:
            data = f.read()
        pcm, rate = decode_file(data)
    except (OSError, ValueError) as exc:
        print(f"echokit-fast transcribe: {args.file}: {exc}", file=sys.stderr)
        return 1
    try:
        cfg = LocalASR(
            model=args.model, language=args.language, device=args.device, beam_size=args.beam_size
        )
        engine = LocalWhisper.from_config(cfg)
        text = asyncio.run(engine.transcribe(pcm, sample_rate=rate))
    except (ModelNotFound, BackendError, ValueError) as exc:
        print(f"echokit-fast transcribe: {exc}", file=sys.stderr)
        return 1
    print(text)
    return 0


def cmd_vad(args: argparse.Namespace) -> int:
    import json

    from echokit_fast.api.vad import HTTP_PARAMS, ParamError, parse_params
    from echokit_fast.backends.vad.silero import SileroVad, speech_timestamps_from_wav

    given = {
        "threshold": args.threshold,
        "min_speech_duration_ms": args.min_speech_duration_ms,
        "min_silence_duration_ms": args.min_silence_duration_ms,
        "speech_pad_ms": args.speech_pad_ms,
    }
    try:
        params = parse_params([{k: repr(v) for k, v in given.items()}], HTTP_PARAMS)
    except ParamError as exc:
        print(f"echokit-fast vad: {exc}", file=sys.stderr)
        return 2
    try:
        with open(args.path, "rb") as f:
            data = f.read()
    except OSError as exc:
        print(f"echokit-fast vad: {args.path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        segments = speech_timestamps_from_wav(data, model=SileroVad(args.model), **params)
    except ValueError as exc:
        print(f"echokit-fast vad: {args.path}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"timestamps": segments}, separators=(",", ":")))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from echokit_fast.config import summary
    from echokit_fast.config_check import check_file

    check = check_file(args.path)
    if check.loaded is None:
        print(f"{args.path}: invalid configuration", file=sys.stderr)
        for issue in check.errors:
            print(f"error: {issue}", file=sys.stderr)
        return 1
    for issue in check.warnings:
        print(f"warning: {issue}", file=sys.stderr)
    for issue in check.notes:
        print(f"note: {issue}", file=sys.stderr)
    # Whatever `serve` would refuse at start-up is an error here too, in the same words.
    if check.unservable:
        print(f"{args.path}: cannot be served", file=sys.stderr)
        for issue in check.unservable:
            print(f"error: {issue.message}", file=sys.stderr)
        return 1
    print(f"{args.path}: OK")
    print(summary(check.loaded))
    if check.warnings:
        print(f"{len(check.warnings)} warning(s)")
    return 0


def cmd_say(args: argparse.Namespace) -> int:
    import time

    from echokit_fast.audio import write_wav
    from echokit_fast.backends.base import BackendError
    from echokit_fast.backends.tts.local import engine as tts

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:  %(name)s: %(message)s")
    try:
        engine = tts.create(args.engine, voice=args.voice, speed=args.speed)
    except (ValueError, BackendError) as exc:
        print(f"echokit-fast say: {exc}", file=sys.stderr)
        return 2
    if args.list_voices:
        print("\n".join(engine.voices()))
        return 0
    text = sys.stdin.read() if args.text == "-" else args.text
    rate = args.rate or engine.native_rate
    t0 = time.perf_counter()
    try:
        audio = engine.synthesize(text, sample_rate=rate)
    except (ValueError, BackendError) as exc:
        print(f"echokit-fast say: {exc}", file=sys.stderr)
        return 2
    took = time.perf_counter() - t0
    if not len(audio):
        print("echokit-fast say: nothing to say", file=sys.stderr)
        return 1
    with open(args.output, "wb") as f:
        f.write(write_wav(audio, rate))
    print(
        f"{args.output}: {len(audio) / rate:.2f} s at {rate} Hz, synthesized in {took:.2f} s",
        file=sys.stderr,
    )
    return 0


class SettingError(ValueError):
    """A bad value in an environment variable (the message names it)."""


def _from_env(name: str, parse: Callable[[str], T], env: Mapping[str, str]) -> T | None:
    value = env.get(name)
    if value is None or value == "":
        return None
    try:
        return parse(value)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise SettingError(f"${name}: {exc}") from None


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value.lower()

    return parse


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {value!r}")
    return number


def _switch(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected 1 or 0 (true or false), got {value!r}")


def serve_settings(args: argparse.Namespace, env: Mapping[str, str]) -> argparse.Namespace:
    """`args` with the serve settings a flag left unset taken from the environment
    (``ECHOKIT_LISTEN``, ``ECHOKIT_LOG_LEVEL``, ``ECHOKIT_LOG_FORMAT``, ``ECHOKIT_CONFIG``,
    then ``CONFIG_PATH``, ``ECHOKIT_TLS_CERT``, ``ECHOKIT_TLS_KEY``, ``ECHOKIT_CONFIG_WRITE``
    and ``ECHOKIT_WORKERS``): a flag beats its variable; ``api_key`` is ``ECHOKIT_API_KEY``
    (``--api-key``, repeatable, beats it; either replaces the config's ``[server]`` keys).
    SettingError for a bad value."""
    out = argparse.Namespace(**vars(args))
    if out.listen is None:
        out.listen = _from_env("ECHOKIT_LISTEN", _host_port, env)
    if out.log_level is None:
        out.log_level = _from_env("ECHOKIT_LOG_LEVEL", _choice(server_logging.LEVELS), env)
    if out.log_format is None:
        out.log_format = _from_env("ECHOKIT_LOG_FORMAT", _choice(server_logging.FORMATS), env)
    if out.config_write is None:
        out.config_write = _from_env("ECHOKIT_CONFIG_WRITE", _switch, env)
    if out.workers is None:
        out.workers = _from_env("ECHOKIT_WORKERS", _positive, env)
    out.workers = out.workers or 1
    out.config_write = bool(out.config_write)
    out.log_level = out.log_level or "info"
    out.log_format = out.log_format or "text"
    out.config_path = (
        args.config or args.config_pos or env.get("ECHOKIT_CONFIG") or env.get("CONFIG_PATH")
    ) or None
    out.tls_cert = args.tls_cert or env.get("ECHOKIT_TLS_CERT") or None
    out.tls_key = args.tls_key or env.get("ECHOKIT_TLS_KEY") or None
    if bool(out.tls_cert) != bool(out.tls_key):
        raise SettingError("--tls-cert and --tls-key go together: give both, or neither")
    if not out.api_key:
        key = env.get("ECHOKIT_API_KEY", "").strip()
        out.api_key = [key] if key else None
    elif not all(k.strip() for k in out.api_key):
        raise SettingError("--api-key: a key cannot be empty")
    return out


def cmd_serve(args: argparse.Namespace) -> int:
    from echokit_fast.backends.registry import unsupported
    from echokit_fast.config import ConfigError, default_config, load_config, summary
    from echokit_fast.server import lifecycle, workers
    from echokit_fast.server.app import create_app
    from echokit_fast.server.security import exposure_warning
    from echokit_fast.server.state import AppState

    if args.config_pos and args.config and args.config_pos != args.config:
        print(
            f"echokit-fast serve: two config files given ({args.config_pos}, {args.config})",
            file=sys.stderr,
        )
        return 2
    if args.llm_url and args.llm_model:
        print("echokit-fast serve: give --llm-url or --llm-model, not both", file=sys.stderr)
        return 2
    try:
        args = serve_settings(args, os.environ)
    except SettingError as exc:
        print(f"echokit-fast serve: {exc}", file=sys.stderr)
        return 2
    server_logging.configure(args.log_level, args.log_format)
    log = logging.getLogger(__name__)

    path = args.config_path
    if path:
        try:
            config = load_config(path).config  # warnings and notes are logged
        except ConfigError as exc:
            print(f"echokit-fast serve: {path}: invalid configuration", file=sys.stderr)
            print(str(exc), file=sys.stderr)
            return 2
        for flag, given in (("--llm-url", args.llm_url), ("--llm-model", args.llm_model)):
            if given:
                log.warning("%s is ignored: %s sets the LLM", flag, path)
        source = path
    else:
        try:
            # the embedded stack ends turns semantically (docs/protocol.md#turn-detection)
            config = default_config(
                llm_url=args.llm_url, llm_model=args.llm_model, turn_detector="smart_turn"
            )
        except ConfigError as exc:
            print(f"echokit-fast serve: {exc}", file=sys.stderr)
            return 2
        source = "embedded default"
    if args.listen:  # the summary names the address really listened on
        host, port = args.listen
        config = config.model_copy(update={"addr": f"{host}:{port}"})
    if args.api_key:
        keys = [k.strip() for k in args.api_key]
        server = config.server.model_copy(update={"api_key": None, "api_keys": keys})
        config = config.model_copy(update={"server": server})
    host, port = config.listen
    if not args.worker:  # the supervisor said it
        log.info("config: %s\n%s", source, summary(config))
        warning = exposure_warning(config.server, host)
        if warning:
            log.warning("%s", warning)

    problems = unsupported(config)
    if problems:
        for problem in problems:
            print(f"echokit-fast serve: {source}: {problem}", file=sys.stderr)
        return 2
    tls = None
    if args.tls_cert:
        try:
            tls = lifecycle.check_tls(args.tls_cert, args.tls_key)
        except ValueError as exc:
            print(f"echokit-fast serve: {exc}", file=sys.stderr)
            return 2
    if args.config_write and not path:
        log.warning("--config-write is ignored: there is no config file to write (--config)")
    if args.workers > 1 and not args.worker:
        return _supervise(args, config, host, port, tls=tls is not None)
    state = AppState(config, config_path=Path(path) if path else None)
    if args.worker:
        state.worker = workers.WorkerSpec.parse(args.worker)
        state.peers_ready = False
    state.config_write = args.config_write and bool(path)
    if args.drain_timeout is not None:
        state.drain_timeout = args.drain_timeout
    app = create_app(state=state)
    status = lifecycle.serve(state, app, host, port, tls=tls)
    if state.load_error is not None:  # a missing model, a broken install: say what
        print(
            f"echokit-fast serve: cannot load the embedded engines: {state.load_error}",
            file=sys.stderr,
        )
    return status


def _supervise(args: argparse.Namespace, config: Config, host: str, port: int, *, tls: bool) -> int:
    """``serve --workers N``: the supervisor (:mod:`echokit_fast.server.workers`)."""
    from echokit_fast.server import workers
    from echokit_fast.server.lifecycle import READY_MESSAGE
    from echokit_fast.server.state import DEFAULT_DRAIN_TIMEOUT

    for given, why in (
        (
            tls,
            "TLS (the supervisor reads each request to choose its worker: terminate TLS in "
            "a proxy in front, or serve with one worker)",
        ),
        (args.config_write, "--config-write (the editor applies a config to one process)"),
    ):
        if given:
            print(
                f"echokit-fast serve: --workers {args.workers} cannot go with {why}",
                file=sys.stderr,
            )
            return 2
    drain = args.drain_timeout if args.drain_timeout is not None else DEFAULT_DRAIN_TIMEOUT
    supervisor = workers.Supervisor(
        args.argv,
        host,
        port,
        args.workers,
        config.limits,
        stop_timeout=drain + 30,
        ready_message=READY_MESSAGE,
    )
    return supervisor.run()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a worker is started with
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "check-config":
        return cmd_check_config(args)
    if args.command == "say":
        return cmd_say(args)
    if args.command == "vad":
        return cmd_vad(args)
    if args.command == "transcribe":
        return cmd_transcribe(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
