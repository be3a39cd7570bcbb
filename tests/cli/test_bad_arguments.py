"""The command line refuses bad arguments with usage and exit code 2, for
every command, including ones added later (found by introspecting the
parser): unknown flags, stray positionals, non-numbers for numeric options,
values outside an option's choices."""
import argparse

import pytest

from convcore import cli


def _commands():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _refused(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, (argv, err)
    assert "usage:" in err and "error:" in err, (argv, err)


@pytest.mark.parametrize("command", sorted(_commands()))
def test_unknown_flag_and_stray_argument(capsys, command):
    _refused(capsys, [command, "--definitely-not-a-flag"])
    _refused(capsys, [command, "stray", "positional", "words"])
    _refused(capsys, [command, "--definitely-not-a-flag=1"])


@pytest.mark.parametrize("command", sorted(_commands()))
def test_typed_options_refuse_bad_values(capsys, command):
    for action in _commands()[command]._actions:
        if not action.option_strings or action.nargs == 0:
            continue
        flag = action.option_strings[-1]
        if action.type in (int, float):
            _refused(capsys, [command, flag, "not-a-number"])
            _refused(capsys, [command, flag, "1e999x"])
        if action.choices is not None:
            _refused(capsys, [command, flag, "no-such-choice-zzz"])
        if action.nargs in (None, 1):
            _refused(capsys, [command, flag])          # value missing


@pytest.mark.parametrize("argv", [["--json"], ["info", "--json", "--json=1"],
                                  ["INFO"], ["", "info"], ["info", "\x00"]])
def test_malformed_command_lines(capsys, argv):
    _refused(capsys, argv)
