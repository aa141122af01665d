"""``APIJudge`` against a local chat completions server on 127.0.0.1."""

from __future__ import annotations

import json
import pickle
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from dataflow.core.errors import InputError, ServiceError
from dataflow.operators.core_vision.eval.metrics.api_judge import APIJudge, chat_base_url
from tests.operators.eval.chat_server import MODEL, ChatServer
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
    assert metric.usage() == {"requests": 3, "retries": 0, "unparsed": 0, "completion_tokens": 60,
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
    assert request["body"]["temperature"] == 0 and request["body"]["max_tokens"] == 512


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
