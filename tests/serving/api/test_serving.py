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
