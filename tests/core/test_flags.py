"""Flags spelled for the CLI (dashes) or the seed script (underscores) parse to the same attribute."""

import argparse

import pytest

from dataflow.core.flags import flag_adder, flag_name


@pytest.mark.parametrize("separator, argv", [("-", ["--ray-address", "auto"]), ("_", ["--ray_address", "auto"])])
def test_a_flag_is_spelled_with_the_separator_and_parsed_under_its_name(separator, argv):
    parser = argparse.ArgumentParser()
    flag_adder(parser, separator)("ray_address", default=None)
    assert parser.parse_args(argv).ray_address == "auto"
    assert flag_name("ray_address", separator) == argv[0]
    with pytest.raises(SystemExit):
        parser.parse_args([flag_name("ray_address", "_" if separator == "-" else "-"), "auto"])
