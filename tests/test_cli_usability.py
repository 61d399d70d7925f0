"""Issue 16, the small things a new user hit: defaults in every ``--help``, one spelling per
flag across commands (old ones still work, hidden), the synthetic banner inside its frame, an
error that names ``--allow-synthetic``, and one "wrote" line after a video swap."""

from __future__ import annotations

import argparse
import logging
import re

import pytest

from fusionrt.cli import build_parser, main
from fusionrt.errors import ModelError
from fusionrt.models.store import ModelStore


def _commands(parser: argparse.ArgumentParser, name: str = "fusionrt"):
    """(name, parser) of ``fusionrt`` and every sub-command, nested ones too."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield from _commands(p, f"{name} {sub}")


def _default_matters(action: argparse.Action) -> bool:
    d = action.default
    if d is None or d is False or d is argparse.SUPPRESS or action.help is argparse.SUPPRESS:
        return False
    if hasattr(d, "__len__") and not len(d):
        return False
    return bool(action.option_strings) or action.nargs in ("?", "*")


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The ``--help`` entry of one option, as the parser's formatter prints it (one line)."""
    fmt = parser.formatter_class(prog=parser.prog)
    fmt.add_argument(action)
    fmt.add_arguments([action])
    return " ".join(fmt.format_help().split())


def _spellings(value) -> set[str]:
    out = {str(value)}
    if isinstance(value, int) and not isinstance(value, bool):
        out.add(f"{value:,}")
    if isinstance(value, float):
        out |= {f"{value:g}", f"{value:.0e}".replace("e+0", "e").replace("e+", "e")}
        if value.is_integer():
            out.add(str(int(value)))
    return out


def test_every_option_default_is_in_help():
    missing = []
    for name, parser in _commands(build_parser()):
        for action in parser._actions:
            if not _default_matters(action):
                continue
            text = _help_of(parser, action)
            if not any(v in text for v in _spellings(action.default)):
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}: "
                               f"default {action.default!r} not in: {text}")
    assert not missing, "\n".join(missing)


def test_help_shows_no_default_twice_and_no_noise():
    parser = dict(_commands(build_parser()))["fusionrt swap"]
    text = " ".join(parser.format_help().split())
    assert "(default 16) (default: 16)" not in text  # already said in the help string
    assert "(default: None)" not in text and "(default: False)" not in text


# -- one spelling per flag ----------------------------------------------------------------------

def _parse(*argv):
    return build_parser().parse_args(list(argv))


def _help(*command) -> str:
    return dict(_commands(build_parser()))[" ".join(("fusionrt",) + command)].format_help()


def test_det_size_is_one_spelling_and_the_old_one_still_works():
    for command in (("bench",), ("batch", "-s", "a", "-i", "b", "-o", "c"),
                    ("triton", "repo", "out")):
        assert _parse(*command, "--det-size", "320").det_size == 320
        assert "--det-size" in _help(*command[:2] if command[0] == "triton" else command[:1])
    assert _parse("bench").det_size == 640
    assert _parse("bench", "--detect-size", "160").det_size == 160  # deprecated, hidden
    assert "--detect-size" not in _help("bench")


def test_max_delay_ms_is_one_spelling_and_the_old_ones_still_work():
    assert _parse("serve", "--max-delay-ms", "2.5").max_delay_ms == 2.5
    assert _parse("triton", "serve", "--repo", "r").max_delay_ms == 2.0
    assert _parse("triton", "serve", "--repo", "r", "--max-delay-ms", "20").max_delay_ms == 20
    assert _parse("triton", "serve", "--repo", "r", "--max-delay-us", "20000").max_delay_ms == 20
    assert _parse("triton", "repo", "o", "--max-queue-delay-us", "3000").max_delay_ms == 3
    for command in (("triton", "serve"), ("triton", "repo")):
        text = _help(*command)
        assert "--max-delay-ms" in text and "-us" not in text
    from fusionrt.triton.server import add_server_args, delay_us
    p = argparse.ArgumentParser()
    add_server_args(p)  # what `python -m fusionrt.triton.server` parses in the PyTriton venv
    assert delay_us(p.parse_args(["--repo", "r", "--max-delay-us", "20000"]).max_delay_ms) == 20000
    assert delay_us(p.parse_args(["--repo", "r", "--max-delay-ms", "0.5"]).max_delay_ms) == 500


def test_triton_commands_pass_the_delay_in_the_unit_triton_wants(monkeypatch, tmp_path):
    import subprocess

    from fusionrt.triton import commands, repository
    seen = {}

    def fake_write(out, o):
        seen["us"] = o.max_queue_delay_us
        raise ModelError("stop here")
    monkeypatch.setattr(repository, "write_repository", fake_write)
    assert main(["triton", "repo", str(tmp_path / "r"), "--max-delay-ms", "1.5"]) == 4
    assert seen["us"] == 1500
    monkeypatch.setattr(commands, "triton_python", lambda: "python")
    monkeypatch.setattr(subprocess, "call", lambda cmd, env=None: seen.setdefault("cmd", cmd) and 0)
    assert main(["triton", "serve", "--repo", str(tmp_path), "--max-delay-us", "4000"]) == 0
    cmd = seen["cmd"]
    assert cmd[cmd.index("--max-delay-ms") + 1] == "4.0"


def test_negative_delay_is_refused(capsys):
    with pytest.raises(SystemExit):
        _parse("triton", "serve", "--repo", "r", "--max-delay-ms", "-1")
    assert "expected milliseconds >= 0" in capsys.readouterr().err


# -- synthetic models ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["inswapper_128", "a_model_with_a_much_longer_name_than_usual_v2"])
def test_synthetic_banner_lines_fit_the_frame(name):
    from fusionrt.pipeline.plan import synthetic_banner
    lines = synthetic_banner(name).strip("\n").splitlines()
    width = len(lines[0])
    assert lines[0] == lines[-1] == "!" * width
    assert len(lines) >= 3
    for line in lines[1:-1]:
        assert len(line) == width and line.startswith("!! ") and line.endswith(" !!"), line
    assert any(name in line for line in lines) and "fusionrt models pull" in "".join(lines)


def test_not_allowed_synthetic_copy_names_the_flag(capsys, tmp_path, fusionrt_home,
                                                    astronaut_path, grace_path):
    store = ModelStore()
    with pytest.raises(ModelError, match="not installed; run: fusionrt models pull inswapper_128$"):
        store.resolve("inswapper_128")  # no copy at all: nothing about synthetic
    syn = store.synthetic_path("inswapper_128")
    syn.parent.mkdir(parents=True)
    syn.write_bytes(b"placeholder")  # only its presence matters here
    with pytest.raises(ModelError, match="synthetic random-weight copy is installed: "
                                         "--allow-synthetic uses it"):
        store.resolve("inswapper_128")
    out = tmp_path / "out.png"
    rc = main(["swap", "-s", str(astronaut_path), "-t", str(grace_path), "-o", str(out),
               "--swapper", "inswapper_128"])
    err = capsys.readouterr().err
    assert rc == ModelError.exit_code and "--allow-synthetic" in err and not out.exists()


# -- one "wrote" line after a video swap --------------------------------------------------------

def test_video_swap_reports_its_output_once(capsys, caplog, tmp_path, astronaut_path):
    from videos import make_test_video  # tests/videos.py
    clip = make_test_video(tmp_path / "clip.mp4", 0.4, 10, (160, 120), audio=False)
    out = tmp_path / "out.mp4"
    with caplog.at_level(logging.INFO):
        rc = main(["swap", "-s", str(astronaut_path), "-t", str(clip), "-o", str(out)])
    stdout, stderr = capsys.readouterr()
    said = stdout + stderr + "\n".join(r.getMessage() for r in caplog.records
                                       if r.levelno >= logging.INFO)
    assert rc == 0 and out.is_file()
    assert len(re.findall(r"\bwrote\s", said)) == 1, said
