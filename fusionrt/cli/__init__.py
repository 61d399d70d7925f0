"""The ``fusionrt`` command: a thin layer over the library.

Each area registers its own sub-commands (``register(subparsers)``) and handlers return an exit
code. Front ends keep their commands (``serve``, ``triton``, ``batch``, ``bench``, ``doctor``,
``swap``, ``live``); the commands of the lower areas (``models``, and ``export``/``build``/``calibrate``
of the builders) live here, above everything they call. Errors a user can fix (``FusionError``) print one line and exit non-zero; never a traceback.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import logging
import re
import signal
import sys
import threading
from pathlib import Path

from ..errors import FusionError

# Modules that add sub-commands; a missing optional module never breaks the others.
COMMAND_MODULES = (
    "fusionrt.pipeline.commands",   # swap
    "fusionrt.cli.models",          # models list|pull|import|verify|path|synth
    "fusionrt.cli.build",           # export, build, calibrate
    "fusionrt.bench.commands",      # bench
    "fusionrt.doctor",              # doctor
    "fusionrt.serve.commands",      # serve
    "fusionrt.triton.commands",     # triton repo|serve|versions|rollback, release
    "fusionrt.batch.commands",      # batch (Ray)
    "fusionrt.live.commands",       # live (camera, stream, paced file)
)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Every option's ``--help`` line ends with its default, unless the help already says it
    (``(default 16)``) or there is none to show (None, False, empty). Options without a help
    string get one that is only the default."""

    def _format_action(self, action):
        if not action.help and _shown_default(action) is not None:
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)

    def _get_help_string(self, action):
        help = action.help or ""
        value = _shown_default(action)
        if value is None or "%(default" in help or _says_default(help, action.default):
            return help
        return f"{help} (default: %(default)s)"


def _shown_default(action) -> str | None:
    d = action.default
    if d is None or d is False or d is argparse.SUPPRESS or (hasattr(d, "__len__") and not len(d)):
        return None
    if not (action.option_strings or action.nargs in ("?", "*")):
        return None  # a required positional has no default to show
    return str(d)


def _says_default(help: str, default) -> bool:
    """The help names the default value itself: "(default cpu)", "default: 16", and numbers
    as written ("default 50,000,000", "default 8e9" for 8000000000.0)."""
    text = help.lower()
    if re.search(rf"default[ :=]+{re.escape(str(default).lower())}(?![\w.])", text):
        return True
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return False
    for m in re.finditer(r"default[ :=]+([-+]?\d[\d,_]*(?:\.\d+)?(?:e[-+]?\d+)?)", text):
        try:
            if float(m.group(1).replace(",", "").replace("_", "")) == float(default):
                return True
        except ValueError:
            continue
    return False


class Parser(argparse.ArgumentParser):
    """The parser of ``fusionrt`` and of every sub-command (``add_subparsers`` makes its
    sub-parsers of the parent's class): help shows defaults (``DefaultsHelpFormatter``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fusionrt", description="Face-swap inference runtime.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("fusionrt"):
                continue  # area not present in this build
            _unavailable(sub, name, e)  # a missing library breaks its own commands only
            continue
        module.register(sub)
    return parser


def _unavailable(sub, module: str, err: ModuleNotFoundError) -> None:
    """Register ``fusionrt <area>`` as a command that explains what is missing."""
    from ..errors import EngineError

    def fail(args):
        raise EngineError(f"{module} | needs the Python package '{err.name}', which is not "
                          f"installed: {err}")
    parts = module.split(".")
    area = parts[2] if parts[1] == "cli" else parts[1]
    try:
        sub.add_parser(area, help=f"(unavailable: {err.name} missing)").set_defaults(func=fail)
    except Exception:  # an area of the same name already registered
        pass


class _Terminated(KeyboardInterrupt):
    """SIGTERM/SIGHUP, raised in the main thread: the same clean shutdown as Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum, frame):
    raise _Terminated(signum)


def _install_signal_handlers() -> dict:
    """SIGTERM/SIGHUP → ``_Terminated`` (a KeyboardInterrupt), so every ``finally`` and
    ``except BaseException`` that removes a temp file runs; returns the handlers replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    old = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            if signal.getsignal(sig) is signal.SIG_IGN:  # e.g. nohup: keep ignoring it
                continue
            old[sig] = signal.signal(sig, _on_signal)
        except (OSError, ValueError):
            continue
    return old


def _sweep(args) -> None:
    """Remove the project's own temp files that a killed earlier run left (older than an hour):
    in the store, the engine cache, and next to this run's output."""
    from .._fs import sweep_stale_temps
    from ..runtime.home import fusionrt_home

    home = fusionrt_home()
    for sub in ("models", "synthetic", "engines"):
        sweep_stale_temps(home / sub)
    engines = home / "engines"
    try:  # entries live one level down (engines/<engine>/); Inductor's own cache is not ours
        subdirs = [d for d in engines.iterdir() if d.is_dir() and d.name != "inductor"]
    except OSError:
        subdirs = []
    for d in subdirs:  # one level, not a walk: the CLI starts fast with a large cache
        sweep_stale_temps(d)
    out = getattr(args, "output", None)
    if isinstance(out, (str, Path)) and str(out):
        sweep_stale_temps(Path(out).parent)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    old = _install_signal_handlers()
    try:
        _sweep(args)
        return int(args.func(args) or 0)
    except FusionError as e:
        print(f"fusionrt: error: {e}", file=sys.stderr)
        return e.exit_code
    except _Terminated as e:
        print(f"fusionrt: stopped by {signal.Signals(e.signum).name}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("fusionrt: interrupted", file=sys.stderr)
        return 130
    finally:
        for sig, handler in old.items():
            try:
                signal.signal(sig, handler)
            except (OSError, ValueError, TypeError):
                pass
