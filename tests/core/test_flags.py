"""Flags spelled for the CLI (dashes) or the seed script (underscores) parse to the same attribute."""

import argparse

import pytest

from dataflow.core.flags import flag_adder, flag_name, flag_respeller


@pytest.mark.parametrize("separator, argv", [("-", ["--ray-address", "auto"]), ("_", ["--ray_address", "auto"])])
def test_a_flag_is_spelled_with_the_separator_and_parsed_under_its_name(separator, argv):
    parser = argparse.ArgumentParser()
    flag_adder(parser, separator)("ray_address", default=None)
    assert parser.parse_args(argv).ray_address == "auto"
    assert flag_name("ray_address", separator) == argv[0]
    with pytest.raises(SystemExit):
        parser.parse_args([flag_name("ray_address", "_" if separator == "-" else "-"), "auto"])


def test_a_message_names_the_flags_as_the_interface_spells_them():
    parser = argparse.ArgumentParser()
    for flag in ("--skip_malformed_lines", "--input_image_key", "--hf_model_name_or_path", "--fp8_attention"):
        parser.add_argument(flag)
    respell = flag_respeller(parser, {"--image-key": "--input_image_key", "--model": "--hf_model_name_or_path"})
    assert respell("skip malformed lines (--skip-malformed-lines).") == "skip malformed lines (--skip_malformed_lines)."
    assert respell("try --image-key image; pass --model /x/y; run without --fp8-attention") == (
        "try --input_image_key image; pass --hf_model_name_or_path /x/y; run without --fp8_attention")
    assert respell("'ray start --head', --backend api, a-b--c--d") == "'ray start --head', --backend api, a-b--c--d"
