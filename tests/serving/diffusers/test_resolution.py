import pytest

from dataflow.serving.diffusers.resolution import (
    output_size,
    reference_size,
    round_to_multiple,
)

# A subset of diffusers' PREFERRED_KONTEXT_RESOLUTIONS, so this test runs without diffusers installed.
PREFERRED = [(672, 1568), (832, 1248), (1024, 1024), (1248, 832), (1328, 800), (1392, 752), (1568, 672)]


@pytest.mark.parametrize("width, height", [(1920, 1080), (1080, 1920), (500, 500), (3000, 2000), (640, 480)])
def test_output_keeps_the_aspect_ratio_at_the_requested_area(width, height):
    out_w, out_h = output_size(width, height, 1024 * 1024, 16)
    assert out_w % 16 == 0 and out_h % 16 == 0
    assert out_w / out_h == pytest.approx(width / height, rel=0.03)
    assert out_w * out_h == pytest.approx(1024 * 1024, rel=0.03)


def test_reference_is_the_nearest_preferred_resolution_at_the_default_area():
    # The same choice as diffusers' _auto_resize: nearest aspect ratio in the preferred list.
    assert reference_size(1920, 1080, PREFERRED, 1024 * 1024, 16) == (1392, 752)
    assert reference_size(600, 900, PREFERRED, 1024 * 1024, 16) == (832, 1248)
    assert reference_size(512, 512, PREFERRED, 1024 * 1024, 16) == (1024, 1024)


def test_reference_scales_with_a_smaller_output_area():
    assert reference_size(1920, 1080, PREFERRED, 512 * 512, 16) == (704, 384)


def test_the_subset_matches_diffusers_list():
    kontext = pytest.importorskip("diffusers.pipelines.flux.pipeline_flux_kontext")
    assert set(PREFERRED) <= set(kontext.PREFERRED_KONTEXT_RESOLUTIONS)


def test_round_to_multiple_never_returns_zero():
    assert round_to_multiple(3, 16) == 16
    assert round_to_multiple(41, 16) == 48
