"""``APIEditServing.edit`` against the local server, in both formats: pairing, faults, errors, usage, key hygiene."""

import pickle
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from dataflow.core.errors import InputError, ModelLoadError, ServiceError
from dataflow.core.request import EditRequest
from dataflow.core.seeding import image_seed
from dataflow.serving.api import APIEditServing
from dataflow.serving.api_image_gen_serving import APIImageGenServing
from tests.serving.api.server import MODEL, expected_edit

FORMATS = ["openai", "gemini"]
KEY = "test-key"


def picture(seed, w=24, h=16):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def serving(server, fmt, key=KEY, **kwargs):
    kwargs.setdefault("retry_delay", 0.01)
    return APIEditServing(fmt, server.url, MODEL, key, **kwargs)


def same(image, array):
    return np.array_equal(np.asarray(image), array)


@pytest.mark.parametrize("fmt", FORMATS)
def test_concurrent_edits_each_get_their_own_answer(edit_server, fmt):
    edit_server.delay = 0.2
    api = serving(edit_server, fmt)
    requests = [EditRequest(f"row-{i}", picture(i, 20 + i, 12), f"edit number {i}") for i in range(16)]
    with ThreadPoolExecutor(api.concurrency) as pool:
        results = list(pool.map(lambda r: api.edit([r])[0], requests))
    for request, result in zip(requests, results):
        assert result.ok, result.error
        assert same(result.images[0], expected_edit([request.image], request.instruction))
    assert edit_server.max_in_flight >= 6
    assert api.usage()["requests"] == 16 and not edit_server.violations


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_reference_image_is_sent_in_order(edit_server, fmt):
    api = serving(edit_server, fmt)
    images = [picture(1), picture(2, 10, 30), picture(3, 8, 8)]
    result = api.edit([EditRequest("k", images[0], "combine", more_images=tuple(images[1:]))])[0]
    assert result.ok and same(result.images[0], expected_edit(images, "combine"))
    (received,) = edit_server.edits()
    assert len(received.images) == 3 and all(same(a, b) for a, b in zip(images, received.images))


def test_openai_asks_for_n_images_in_one_request_with_a_per_row_seed(edit_server):
    api = serving(edit_server, "openai", num_images_per_prompt=2, extra_body={"seed": 5, "guidance_scale": 2.5})
    image = picture(0)
    result = api.edit([EditRequest("row-a", image, "twice", num_images=2)])[0]
    seed = image_seed(5, "row-a", 0) % 2**31
    assert [same(im, expected_edit([image], "twice", k, seed)) for k, im in enumerate(result.images)] == [True, True]
    (received,) = edit_server.edits()
    assert received.fields["n"] == "2" and received.fields["seed"] == str(seed)
    assert received.fields["guidance_scale"] == "2.5"


def test_gemini_sends_one_request_per_image_each_with_its_own_seed(edit_server):
    api = serving(edit_server, "gemini", num_images_per_prompt=2, extra_body={"seed": 5})
    image = picture(0)
    result = api.edit([EditRequest("row-a", image, "twice", num_images=2)])[0]
    seeds = [image_seed(5, "row-a", k) % 2**31 for k in range(2)]
    assert [r.body["generationConfig"]["seed"] for r in edit_server.edits()] == seeds
    assert [same(im, expected_edit([image], "twice", 0, s)) for im, s in zip(result.images, seeds)] == [True, True]


@pytest.mark.parametrize("fmt", FORMATS)
def test_transient_faults_are_retried_and_the_row_succeeds(edit_server, fmt):
    api = serving(edit_server, fmt, timeout=0.4)
    edit_server.retry_after = "0.2"
    edit_server.slow_seconds = 1.0
    edit_server.inject("p", "429", "500", "slow", "drop", "503")
    started = time.monotonic()
    result = api.edit([EditRequest("k", picture(0), "p")])[0]
    assert result.ok, result.error
    assert time.monotonic() - started >= 0.2 + 0.4  # waited out the Retry-After and the timeout
    assert api.usage()["retries"] == 5 and len(edit_server.edits()) == 6


@pytest.mark.parametrize("fmt", FORMATS)
def test_retries_exhausted_fail_the_row_saying_so(edit_server, fmt):
    api = serving(edit_server, fmt, max_retries=2)
    edit_server.inject("p", "500", "500", "503")
    result = api.edit([EditRequest("k", picture(0), "p")])[0]
    assert "gave up after 3 attempts (2 retries); last: HTTP 503" in result.error


@pytest.mark.parametrize("fmt", FORMATS)
def test_refusals_and_answers_without_an_image_are_row_errors_sent_once(edit_server, fmt):
    api = serving(edit_server, fmt)
    prompts = ["REFUSE please", "NOIMAGE please", "BADREQ please", "fine"]
    results = api.edit([EditRequest(str(i), picture(i), p) for i, p in enumerate(prompts)])
    refused, no_image, bad, fine = results
    assert refused.error.startswith("refused by the API")
    assert ("moderation_blocked" if fmt == "openai" else "IMAGE_SAFETY") in refused.error
    assert "no image" in no_image.error
    if fmt == "gemini":
        assert "the model said: Here is a description" in no_image.error
    assert "rejected the request" in bad.error and fine.ok
    assert edit_server.prompts() == prompts  # nothing retried
    usage = api.usage()
    assert usage["refusals"] == 1 and usage["retries"] == 0


def test_a_blocked_gemini_prompt_is_a_refusal(edit_server):
    api = serving(edit_server, "gemini")
    result = api.edit([EditRequest("k", picture(0), "BLOCK this")])[0]
    assert "blockReason PROHIBITED_CONTENT" in result.error and api.usage()["refusals"] == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_malformed_json_is_the_rows_error(edit_server, fmt):
    api = serving(edit_server, fmt)
    edit_server.inject("p", "badjson")
    result = api.edit([EditRequest("k", picture(0), "p")])[0]
    assert "malformed JSON" in result.error and len(edit_server.edits()) == 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_bad_or_missing_key_stops_the_run_naming_the_problem(edit_server, fmt):
    with pytest.raises(ServiceError, match=r"answered HTTP 40[01].*the API key was refused; check DF_API_KEY") as info:
        serving(edit_server, fmt, key="sk-wrong-0123456789").edit([EditRequest("k", picture(0), "p")])
    assert "0123456789" not in str(info.value) and "6789" not in str(info.value)
    assert edit_server.url in str(info.value)
    with pytest.raises(ServiceError, match="no API key was given; set DF_API_KEY"):
        serving(edit_server, fmt, key=None).edit([EditRequest("k", picture(0), "p")])
    assert len(edit_server.edits()) == 2  # not retried


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_model_the_service_does_not_have_stops_the_run_in_one_line_naming_it(edit_server, fmt):
    api = APIEditServing(fmt, edit_server.url, "no-such-model", KEY)
    with pytest.raises(ServiceError) as info:
        api.edit([EditRequest("k", picture(0), "p")])
    message = str(info.value)
    assert message.startswith(f"the model 'no-such-model' does not exist at {api.api_url} (HTTP 404: ")
    assert "current " + ("GPT" if fmt == "openai" else "Gemini") + " image models: " in message
    assert "\n" not in message and len(edit_server.edits()) == 1


def test_a_retired_default_or_named_model_is_said_to_be_retired(edit_server):
    edit_server.models = {"gpt-image-2"}
    for model in ("gpt-image-1", None):  # None: the default
        with pytest.raises(ServiceError) as info:
            APIEditServing("openai", edit_server.url, model, KEY).edit([EditRequest("k", picture(0), "p")])
        shown = model or "gpt-image-2.5-sunburst"
        assert str(info.value).startswith(f"the model '{shown}' does not exist")
        if model:
            assert "gpt-image-1 was shut down on 2026-10-23; current GPT image models: gpt-image-2.5-sunburst" \
                in str(info.value)
    assert [r.fields["model"] for r in edit_server.edits()] == ["gpt-image-1", "gpt-image-2.5-sunburst"]


def test_a_wrong_url_is_not_mistaken_for_a_missing_model(edit_server):
    api = APIEditServing("openai", edit_server.url + "/other", MODEL, KEY)
    with pytest.raises(ServiceError, match="HTTP 404.*check the model name 'test-model' and the API URL"):
        api.edit([EditRequest("k", picture(0), "p")])


def test_a_server_nobody_answers_at_stops_the_run():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = APIEditServing("openai", f"http://127.0.0.1:{port}", MODEL, KEY, max_retries=1, retry_delay=0)
    with pytest.raises(ServiceError, match="cannot connect"):
        api.edit([EditRequest("k", picture(0), "p")])
    with pytest.raises(ServiceError, match="cannot connect"):
        api.check_model()


@pytest.mark.parametrize("fmt", FORMATS)
def test_check_model_reaches_the_api_without_generating(edit_server, fmt):
    assert "answers" in serving(edit_server, fmt).check_model()
    with pytest.raises(ServiceError, match="check DF_API_KEY"):
        serving(edit_server, fmt, key="bad-key-xyz").check_model()
    assert edit_server.edits() == []
    if fmt == "gemini":
        with pytest.raises(ServiceError, match="404"):
            APIEditServing(fmt, edit_server.url, "other", KEY).check_model()
    else:
        assert "lists no model 'other'" in APIEditServing(fmt, edit_server.url, "other", KEY).check_model()


def test_images_given_as_urls_are_downloaded_without_the_key(edit_server):
    edit_server.url_mode = True
    api = serving(edit_server, "openai", num_images_per_prompt=2)
    image = picture(4)
    result = api.edit([EditRequest("k", image, "by url", num_images=2)])[0]
    assert [same(im, expected_edit([image], "by url", k)) for k, im in enumerate(result.images)] == [True, True]
    downloads = [r for r in edit_server.received if r.kind == "file"]
    assert len(downloads) == 2 and all("authorization" not in r.headers for r in downloads)


def test_usage_sums_what_the_api_reports(edit_server):
    api = serving(edit_server, "gemini")
    api.edit([EditRequest(str(i), picture(i), f"p{i}") for i in range(3)])
    usage = api.usage()
    assert usage["requests"] == 3 and usage["images"] == 3
    assert usage["totalTokenCount"] == 3 * 1590 and usage["promptTokensDetails.IMAGE"] == 3 * 258
    api = serving(edit_server, "openai")
    api.edit([EditRequest("a", picture(0), "q")])
    assert api.usage()["input_tokens"] == 10 and api.usage()["output_tokens"] == 100


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_key_is_in_no_repr_fingerprint_message_or_pickle_text(edit_server, fmt):
    key = "sk-hidden-abcdefghijklmnop"
    edit_server.key = key
    api = serving(edit_server, fmt, key=key, extra_body={"seed": 1})
    for text in (repr(api), str(api.fingerprint()), repr(vars(api)), str(api.usage())):
        assert key not in text and "abcdefghijklmnop" not in text
    result = api.edit([EditRequest("k", picture(0), "ECHOKEY please")])[0]
    if fmt == "openai":  # the server echoes the Authorization header in its error message
        assert result.error and key not in result.error and "***" in result.error
    copy = pickle.loads(pickle.dumps(api))  # engines ship servings to workers; the copy makes its own client
    assert copy.edit([EditRequest("k", picture(0), "p")])[0].ok


def test_the_fingerprint_names_format_url_model_and_parameters_only(edit_server):
    api = APIEditServing("openai", edit_server.url + "/v1/", MODEL, KEY, size="512x512", quality="low",
                         num_images_per_prompt=2, extra_body={"seed": 3, "num_inference_steps": 8},
                         max_concurrency=3, max_retries=1)
    assert api.fingerprint() == {
        "serving": "api", "api_format": "openai", "api_url": edit_server.url + "/v1", "model": MODEL,
        "size": "512x512", "quality": "low", "extra_body": {"num_inference_steps": 8},
        "num_images_per_prompt": 2, "seed": 3,
    }
    assert api.concurrency == 3 and api.batch_size == 1 and api.max_input_images is None


def test_the_documented_names_map_onto_the_core(edit_server, monkeypatch):
    monkeypatch.setenv("DF_API_KEY", KEY)
    api = APIImageGenServing(api_url=edit_server.url, image_io=None, Image_gen_task="imageedit", batch_size=4,
                             api_format="gemini", model_name=MODEL, timeout=300, connect_timeout=30)
    assert api.batch_size == 1 and api.concurrency == 8 and api._http.timeout == 300
    assert api.edit([EditRequest("k", picture(0), "p")])[0].ok  # the key came from DF_API_KEY
    with pytest.raises(InputError, match="Image_gen_task='text2image' is not supported"):
        APIImageGenServing(api_url=edit_server.url, Image_gen_task="text2image")
    with pytest.raises(InputError, match="batch_size"):
        APIImageGenServing(api_url=edit_server.url, batch_size=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(api_format="dalle"), "api_format must be one of"),
    (dict(max_concurrency=0), "max_concurrency"),
    (dict(max_retries=-1), "max_retries"),
    (dict(timeout=0), "timeout"),
    (dict(extra_body={"prompt": "x"}), "must not set prompt"),
    (dict(extra_body={"seed": "7"}), "seed must be an integer"),
    (dict(extra_body=[1]), "JSON object"),
    (dict(api_format="gemini", quality="high"), "quality is not an option of the gemini format; it takes "
                                                "aspect_ratio"),
    (dict(api_url="http://h/v1?api_key=1"), "DF_API_KEY"),
])
def test_bad_arguments_are_refused_before_any_request(kwargs, message):
    with pytest.raises(InputError, match=message):
        APIEditServing(**kwargs)


def test_a_check_the_server_keeps_failing_is_a_model_load_error(edit_server):
    edit_server.models_status = 503
    with pytest.raises(ModelLoadError, match="the API check failed.*gave up after 3 attempts.*HTTP 503"):
        serving(edit_server, "openai", max_retries=5).check_model()  # the check retries at most twice


# -- what current services take ----------------------------------------------------------------------------
def test_openai_options_reach_the_server_and_match_input_picks_the_nearest_standard_size(edit_server):
    api = serving(edit_server, "openai", quality="high", input_fidelity="high", background="opaque",
                  size="match_input")
    for image in (picture(0, 40, 30), picture(1, 30, 40), picture(2, 31, 30)):
        assert api.edit([EditRequest("k", image, "p")])[0].ok
    fields = [r.fields for r in edit_server.edits()]
    assert [f["size"] for f in fields] == ["1536x1024", "1024x1536", "1024x1024"]
    assert all((f["quality"], f["input_fidelity"], f["background"]) == ("high", "high", "opaque") for f in fields)
    assert api.fingerprint()["input_fidelity"] == "high" and api.fingerprint()["size"] == "match_input"


def test_a_transparent_background_is_kept_in_the_saved_image(edit_server):
    api = serving(edit_server, "openai", background="transparent")
    (result,) = api.edit([EditRequest("k", picture(0), "p")])
    assert result.images[0].mode == "RGBA" and np.all(np.asarray(result.images[0])[..., 3] == 128)
    (result,) = serving(edit_server, "openai").edit([EditRequest("k", picture(0), "p")])
    assert result.images[0].mode == "RGB"


def test_more_than_ten_images_are_asked_in_several_requests_and_more_than_16_inputs_fail_unsent(edit_server):
    api = serving(edit_server, "openai", num_images_per_prompt=12)
    (result,) = api.edit([EditRequest("k", picture(0), "many", num_images=12)])
    assert result.ok and len(result.images) == 12
    assert [r.fields["n"] for r in edit_server.edits()] == ["10", "2"]
    images = [picture(i, 8, 8) for i in range(17)]
    (result,) = api.edit([EditRequest("k", images[0], "p", more_images=tuple(images[1:]))])
    assert result.error == "this row has 17 images; the openai format takes at most 16 per request"
    assert len(edit_server.edits()) == 2


def test_gemini_image_config_follows_the_first_image(edit_server):
    api = serving(edit_server, "gemini", aspect_ratio="match_input", image_size="match_input")
    for image in (picture(0, 40, 30), picture(1, 20, 60), picture(2, 1500, 2)):
        assert api.edit([EditRequest("k", image, "p")])[0].ok
    configs = [r.body["generationConfig"]["imageConfig"] for r in edit_server.edits()]
    assert configs == [{"aspectRatio": "4:3", "imageSize": "1K"}, {"aspectRatio": "9:16", "imageSize": "1K"},
                       {"aspectRatio": "21:9", "imageSize": "2K"}]
    serving(edit_server, "gemini", aspect_ratio="16:9", image_size="4K").edit([EditRequest("k", picture(0), "p")])
    assert edit_server.edits()[-1].body["generationConfig"]["imageConfig"] == {"aspectRatio": "16:9",
                                                                               "imageSize": "4K"}
    serving(edit_server, "gemini").edit([EditRequest("k", picture(0), "p")])
    assert "imageConfig" not in edit_server.edits()[-1].body["generationConfig"]


@pytest.mark.parametrize("given, path", [
    ("{url}", "/v1beta/models/test-model:generateContent"),
    ("{url}/v1", "/v1/models/test-model:generateContent"),
    ("{url}/v1beta/", "/v1beta/models/test-model:generateContent"),
    ("{url}/v1/models/test-model:generateContent", "/v1/models/test-model:generateContent"),
    ("{url}/v1beta/models/test-model:generateContent", "/v1beta/models/test-model:generateContent"),
])
def test_gemini_takes_a_root_a_version_or_a_full_endpoint_and_keeps_the_version(edit_server, given, path):
    url = given.format(url=edit_server.url)
    api = APIEditServing("gemini", url, MODEL if "models/" not in url else None, KEY)
    assert api.edit([EditRequest("k", picture(0), "p")])[0].ok
    assert [r.path for r in edit_server.edits()] == [path]
    assert "answers" in api.check_model()
    assert edit_server.received[-1].path == path.removesuffix(":generateContent")


def test_a_gemini_endpoint_naming_another_model_is_refused():
    with pytest.raises(InputError, match="api_url names the model 'a' but the model given is 'b'"):
        APIEditServing("gemini", "https://g.example/v1beta/models/a:generateContent", "b")


def test_gemini_answers_in_snake_case_are_read_alike(edit_server):
    edit_server.snake_case = True
    api = serving(edit_server, "gemini")
    image = picture(3)
    ok, blocked, refused = api.edit([EditRequest("a", image, "fine"), EditRequest("b", image, "BLOCK it"),
                                     EditRequest("c", image, "REFUSE it")])
    assert same(ok.images[0], expected_edit([image], "fine"))
    assert blocked.final and "blocked (blockReason PROHIBITED_CONTENT)" in blocked.error
    assert refused.final and refused.error.startswith("refused by the API (finishReason IMAGE_SAFETY)")
    usage = api.usage()
    assert usage["refusals"] == 2 and usage["totalTokenCount"] == 3 * 1590
    assert usage["promptTokensDetails.IMAGE"] == 3 * 258 and not any("_" in name for name in usage
                                                                     if name != "request_bytes")


def test_multi_turn_gemini_edits_each_turn_on_the_previous_turns_image(edit_server):
    api = serving(edit_server, "gemini", multi_turn=True, extra_body={"seed": 3})
    image = picture(5)
    request = EditRequest("row", image, "then add a hat", earlier_turns=("make it red",))
    (result,) = api.edit([request])
    seed = image_seed(3, "row", 0) % 2**31
    first = expected_edit([image], "make it red", 0, seed)
    assert same(result.images[0], expected_edit([first], "then add a hat", 0, seed))
    one, two = edit_server.edits()
    assert (one.turns, two.turns) == (1, 2) and not edit_server.violations
    assert [c["role"] for c in two.body["contents"]] == ["user", "model", "user"]
    assert two.body["contents"][0] == one.body["contents"][0]  # the images go once, in the first turn
    assert api.fingerprint()["multi_turn"] is True and api.wants_earlier_turns


def test_a_multi_turn_row_failing_in_a_later_turn_says_which(edit_server):
    api = serving(edit_server, "gemini", multi_turn=True)
    (result,) = api.edit([EditRequest("row", picture(0), "REFUSE the hat", earlier_turns=("make it red",))])
    assert result.final and result.error.startswith("turn 2 of 2: refused by the API (finishReason IMAGE_SAFETY)")


@pytest.mark.parametrize("kwargs, message", [
    (dict(quality="ultra"), "quality must be one of low, medium, high, xhigh, max, auto"),
    (dict(size="big"), "size must be auto, match_input or WIDTHxHEIGHT"),
    (dict(background="clear"), "background must be one of transparent, opaque, auto"),
    (dict(input_fidelity="max"), "input_fidelity must be one of high, low"),
    (dict(multi_turn=True), "multi_turn is not an option of the openai format"),
    (dict(api_format="gemini", aspect_ratio="5:1"), "aspect_ratio must be one of 1:1, 2:3"),
    (dict(api_format="gemini", image_size="8K"), "image_size must be one of 1K, 2K, 4K or match_input"),
    (dict(api_format="gemini", background="opaque"), "background is not an option of the gemini format"),
])
def test_bad_options_are_refused_naming_the_choices(kwargs, message):
    with pytest.raises(InputError, match=message):
        APIEditServing(**kwargs)


def test_options_added_later_leave_earlier_fingerprints_as_they_were(edit_server):
    openai = APIEditServing("openai", edit_server.url, MODEL, KEY)
    gemini = APIEditServing("gemini", edit_server.url, MODEL, KEY)
    assert set(openai.fingerprint()) == {"serving", "api_format", "api_url", "model", "size", "quality",
                                         "extra_body", "num_images_per_prompt", "seed"}
    assert gemini.fingerprint()["api_url"] == edit_server.url and "aspect_ratio" not in gemini.fingerprint()
    assert APIEditServing("gemini", edit_server.url + "/v1", MODEL, KEY).fingerprint()["api_url"] == \
        edit_server.url + "/v1"
