"""``APIJudge`` against a local chat completions server on 127.0.0.1."""

from __future__ import annotations

import json
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from dataflow.core.errors import InputError, ServiceError
from dataflow.operators.core_vision.eval.metrics.api_judge import APIJudge, chat_base_url
from tests.operators.eval.chat_server import MODEL, REFUSAL, ChatServer
from tests.operators.eval.conftest import item, noise

KEY = "judge-key"


def judge(server, key=KEY, **options) -> APIJudge:
    options.setdefault("retry_delay", 0)
    return APIJudge(server.url, MODEL, key, **options)


def scored(server, *instructions, **options):
    metric = judge(server, **options)
    try:
        return metric, metric.score([item(noise(24, 16, seed=i), noise(20, 20, seed=50 + i), text, key=f"r/{i}")
                                     for i, text in enumerate(instructions)])
    finally:
        metric.close()


def test_clean_fenced_and_messy_answers_give_values(chat_server):
    metric, results = scored(chat_server, "CLEAN make the sky red", "FENCED add a cat", "MESSY remove the dog")
    assert [r.error for r in results] == [None, None, None]
    assert [(r.values["sc"], r.values["pq"]) for r in results] == [(7, 8), (6, 9.5), (7, 8)]
    assert results[0].values["overall"] == pytest.approx(56 ** 0.5)
    assert results[1].values["reason"] == "close enough"
    assert chat_server.violations == []
    usage = metric.usage()
    assert usage.pop("request_bytes") > 0
    assert usage == {"requests": 3, "retries": 0, "refusals": 0, "unparsed": 0, "completion_tokens": 60,
                     "prompt_tokens": 300, "total_tokens": 360}


def test_both_images_arrive_in_order_and_the_key_only_in_the_header(chat_server):
    source, edited = noise(24, 16, seed=1), noise(20, 20, seed=2)
    metric = judge(chat_server)
    (result,) = metric.score([item(source, edited, "CLEAN make it red")])
    assert result.error is None and chat_server.violations == []
    (request,) = chat_server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {KEY}"
    assert KEY not in json.dumps(request["body"])
    assert [image.shape for image in request["images"]] == [(16, 24, 3), (20, 20, 3)]
    assert np.array_equal(request["images"][0], np.asarray(source))
    assert np.array_equal(request["images"][1], np.asarray(edited))
    assert request["body"]["max_completion_tokens"] == 2048
    assert "max_tokens" not in request["body"] and "temperature" not in request["body"]


def test_unparseable_answers_are_item_errors_without_the_key(chat_server):
    metric, results = scored(chat_server, "GARBAGE", "ECHOKEY", "CLEAN")
    assert "no sc (semantic consistency) or pq (perceptual quality) score" in results[0].error
    assert "unable to evaluate" in results[0].error
    assert results[1].error and KEY not in results[1].error and "***" in results[1].error
    assert results[2].error is None
    assert metric.usage()["unparsed"] == 2
    assert all(KEY not in repr(r) for r in results)


def test_a_500_is_retried_and_exhausted_retries_are_the_items_error(chat_server):
    metric, results = scored(chat_server, "FLAKY", "DOWN", max_retries=2)
    assert results[0].error is None and results[0].values["sc"] == 7
    assert "gave up after 3 attempts" in results[1].error and "HTTP 500" in results[1].error
    assert metric.usage()["requests"] == 2 + 3 and metric.usage()["retries"] == 1 + 2


def test_a_refused_key_stops_the_run_without_showing_it(chat_server):
    for key, hint in (("wrong-key-123456", "the API key was refused; check DF_API_KEY"),
                      (None, "no API key was given; set DF_API_KEY")):
        with pytest.raises(ServiceError, match="HTTP 401") as info:
            judge(chat_server, key=key).score([item(noise(8, 8), noise(8, 8), "CLEAN")])
        assert hint in str(info.value)
        assert "wrong-key-123456" not in str(info.value)


def test_a_wrong_url_is_a_service_error(chat_server):
    metric = APIJudge(chat_server.url + "/other/v1", MODEL, KEY, retry_delay=0)
    with pytest.raises(ServiceError, match="HTTP 404.*check the judge model name"):
        metric.score([item(noise(8, 8), noise(8, 8), "CLEAN")])


def test_concurrent_calls_keep_each_items_answer():
    server = ChatServer(delay=0.05).start()
    try:
        metric = judge(server, max_concurrency=8)
        items = [item(noise(8, 8, seed=n), noise(8, 8, seed=99), f"SCORE{n % 11}", key=f"r/{n}") for n in range(16)]
        with ThreadPoolExecutor(metric.concurrency) as pool:
            results = list(pool.map(lambda i: metric.score([i])[0], items))
        assert [r.values["sc"] for r in results] == [n % 11 for n in range(16)]
        assert [r.values["pq"] for r in results] == [10 - n % 11 for n in range(16)]
        assert server.max_in_flight > 1 and metric.usage()["requests"] == 16
        metric.close()
    finally:
        server.stop()


def test_check_lists_the_model_and_refuses_a_bad_key(chat_server):
    assert "is listed" in judge(chat_server).check()
    assert "lists no model 'other'" in APIJudge(chat_server.url, "other", KEY).check()
    with pytest.raises(ServiceError, match="401"):
        judge(chat_server, key="bad").check()


def test_base_urls_options_fingerprint_and_pickling():
    assert chat_base_url("http://h:8000") == "http://h:8000/v1"
    assert chat_base_url("http://h:8000/v1/") == "http://h:8000/v1"
    assert chat_base_url("http://h:8000/v1/chat/completions") == "http://h:8000/v1"
    assert chat_base_url("https://g.example/v1beta/openai") == "https://g.example/v1beta/openai"
    for bad in ({"model": ""}, {"max_concurrency": 0}, {"max_retries": -1}, {"extra_body": {"messages": []}},
                {"api_url": "ftp://x"}, {"api_url": "http://h/?key=1"}):
        with pytest.raises(InputError):
            APIJudge(**{"api_url": "http://h", "model": "m", **bad})
    metric = APIJudge("http://h", "m", "sk-very-secret", extra_body={"top_p": 1})
    assert "sk-very-secret" not in repr(metric.fingerprint()) + repr(metric)
    assert metric.fingerprint()["extra_body"] == {"top_p": 1} and metric.concurrency == 8
    clone = pickle.loads(pickle.dumps(metric))
    assert clone._http.key.reveal() == "sk-very-secret" and clone.usage()["requests"] == 0


def test_item_without_source_is_its_error(chat_server):
    (result,) = judge(chat_server).score([item(None, noise(8, 8), "CLEAN")])
    assert "no source image" in result.error and chat_server.requests == []


@pytest.fixture
def reasoning_server():
    server = ChatServer(reasoning=True).start()
    yield server
    server.stop()


def test_a_reasoning_model_that_refuses_max_tokens_and_temperature_judges(reasoning_server):
    metric, results = scored(reasoning_server, "CLEAN make the sky red", "SCORE3")
    assert [r.error for r in results] == [None, None] and results[1].values["sc"] == 3
    assert [sorted(k for k in r["body"] if k != "messages") for r in reasoning_server.requests] == \
        [["max_completion_tokens", "model"]] * 2


def test_max_tokens_and_temperature_are_options_for_servers_that_want_them(chat_server, reasoning_server):
    _, (result,) = scored(chat_server, "CLEAN", token_field="max_tokens", max_tokens=300, temperature=0)
    assert result.error is None
    body = chat_server.requests[0]["body"]
    assert (body["max_tokens"], body["temperature"]) == (300, 0) and "max_completion_tokens" not in body
    for options, hint in ((dict(token_field="max_tokens"), "try token_field='max_completion_tokens'"),
                          (dict(temperature=0), "try temperature=None")):
        with pytest.raises(ServiceError, match=f"refuses the parameter .*HTTP 400: Unsupported .*; {hint}") as info:
            scored(reasoning_server, "CLEAN", **options)
        assert "\n" not in str(info.value)


def test_a_refusal_is_reported_in_the_models_words(chat_server):
    metric, (refused, cut, fine) = scored(chat_server, "REFUSE", "LONGTHINK", "CLEAN", max_tokens=64)
    assert refused.error == f"the judge refused: {REFUSAL}"
    assert cut.error == ("the judge's answer was cut at max_completion_tokens=64 before any text (finish_reason "
                         "length); a reasoning model may need a larger max_tokens")
    assert fine.error is None and "{" not in refused.error + cut.error  # no raw JSON
    usage = metric.usage()
    assert (usage["refusals"], usage["unparsed"]) == (1, 1)


def test_a_judge_model_the_server_does_not_have_is_one_line_naming_it(chat_server):
    metric = APIJudge(chat_server.url, "gone-model", KEY, retry_delay=0)
    chat_server.missing_models = {"gone-model"}
    with pytest.raises(ServiceError) as info:
        metric.score([item(noise(8, 8), noise(8, 8), "CLEAN")])
    assert str(info.value).startswith(f"the judge model 'gone-model' does not exist at {chat_server.url}/v1 "
                                      "(HTTP 404: The model `gone-model` does not exist")
