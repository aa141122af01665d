"""Request shapes and answer reading of the OpenAI and Gemini formats, without a server."""

import base64
import json

import pytest

from dataflow.http import Rejected, Unauthorized
from dataflow.serving.api.edit_format import AnswerError
from dataflow.serving.api.gemini_format import GeminiEditFormat, gemini_root_url, split_gemini_url
from dataflow.serving.api.openai_format import OpenAIEditFormat, openai_base_url
from dataflow.serving.api.upload import Upload

A, B = Upload(b"A", "image/png"), Upload(b"B", "image/jpeg", as_is=True)


@pytest.mark.parametrize("given, base", [
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    ("https://api.openai.com/v1/", "https://api.openai.com/v1"),
    ("https://api.openai.com", "https://api.openai.com/v1"),
    ("http://gpu-box:8000", "http://gpu-box:8000/v1"),
    ("http://gpu-box:8000/v1/images/edits", "http://gpu-box:8000/v1"),
    ("https://proxy.example.com/openai", "https://proxy.example.com/openai/v1"),
    ("https://generativelanguage.googleapis.com/v1beta/openai",
     "https://generativelanguage.googleapis.com/v1beta/openai"),
])
def test_the_openai_base_has_one_version_segment(given, base):
    assert openai_base_url(given) == base
    assert OpenAIEditFormat(given, "m").endpoint == base + "/images/edits"


@pytest.mark.parametrize("given", ["https://generativelanguage.googleapis.com",
                                   "https://generativelanguage.googleapis.com/",
                                   "https://generativelanguage.googleapis.com/v1beta"])
def test_the_gemini_endpoint_is_built_once(given):
    assert gemini_root_url(given) == "https://generativelanguage.googleapis.com"
    assert GeminiEditFormat(given, "models/gemini-x").endpoint == \
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-x:generateContent"


@pytest.mark.parametrize("given, parts", [
    ("https://g.example", ("https://g.example", None, None)),
    ("https://g.example/v1", ("https://g.example", "v1", None)),
    ("https://g.example/proxy/v1beta/", ("https://g.example/proxy", "v1beta", None)),
    ("https://g.example/v1alpha/models/gemini-3-pro-image:generateContent",
     ("https://g.example", "v1alpha", "gemini-3-pro-image")),
    ("https://g.example/models/m", ("https://g.example", None, "m")),
])
def test_a_gemini_url_is_read_as_root_version_and_model(given, parts):
    assert split_gemini_url(given) == parts


def test_openai_sends_one_image_as_image_and_several_as_image_brackets():
    fmt = OpenAIEditFormat("http://h", "m", size="1024x1024", quality="high",
                           extra_body={"num_inference_steps": 30, "guidance_scale": 4.0, "flag": True,
                                       "negative_prompt": "blurry", "nvext": {"a": 1}})
    one = fmt.edit_call([A], "do it", 2, seed=7)
    assert one.method == "POST" and one.url == "http://h/v1/images/edits"
    assert one.files == [("image", ("image_0.png", b"A", "image/png"))]
    assert one.data == {"prompt": "do it", "model": "m", "n": "2", "size": "1024x1024", "quality": "high",
                        "num_inference_steps": "30", "guidance_scale": "4.0", "flag": "true",
                        "negative_prompt": "blurry", "nvext": '{"a": 1}', "seed": "7"}
    two = fmt.edit_call([A, B], "do it", 1)
    assert [name for name, _ in two.files] == ["image[]", "image[]"]
    assert [part for _, part in two.files] == [("image_0.png", b"A", "image/png"), ("image_1.jpg", b"B", "image/jpeg")]
    assert "seed" not in two.data and "size" in two.data


def test_openai_answers_give_bytes_or_urls():
    png = base64.b64encode(b"PNGDATA").decode()
    fmt = OpenAIEditFormat("http://h", "m")
    answer = fmt.read_answer({"data": [{"b64_json": png}, {"url": "http://h/f.png"}], "usage": {"total_tokens": 5}})
    assert answer.images == [b"PNGDATA", "http://h/f.png"]
    assert fmt.usage({"usage": {"total_tokens": 5}}) == {"total_tokens": 5}
    for payload in ({"data": []}, {}, [], {"data": [{"revised_prompt": "x"}]}):
        with pytest.raises(AnswerError):
            fmt.read_answer(payload)


def test_openai_refusals_are_told_apart_from_other_bad_requests():
    fmt = OpenAIEditFormat("http://h", "m")
    refusal = fmt.rejection(Rejected("HTTP 400: rejected by the safety system", 400,
                                     {"error": {"code": "moderation_blocked", "message": "rejected"}}))
    assert refusal.refusal and "moderation_blocked" in str(refusal)
    other = fmt.rejection(Rejected("HTTP 400: Invalid size", 400, {"error": {"code": "invalid_value"}}))
    assert not other.refusal and "rejected the request" in str(other) and "Invalid size" in str(other)


def test_gemini_sends_the_images_then_the_text_and_asks_for_an_image():
    fmt = GeminiEditFormat("https://g", "gm", extra_body={
        "generationConfig": {"imageConfig": {"aspectRatio": "16:9"}}, "safetySettings": []})
    call = fmt.edit_call([A, B], "combine them", 1, seed=11)
    body = call.json
    parts = body["contents"][0]["parts"]
    assert [base64.b64decode(p["inline_data"]["data"]) for p in parts[:2]] == [b"A", b"B"]
    assert [p["inline_data"]["mime_type"] for p in parts[:2]] == ["image/png", "image/jpeg"]
    assert parts[2] == {"text": "combine them"}
    assert body["generationConfig"] == {"responseModalities": ["TEXT", "IMAGE"], "seed": 11,
                                        "imageConfig": {"aspectRatio": "16:9"}}
    assert body["safetySettings"] == [] and json.dumps(body)
    assert fmt.headers("k") == {"x-goog-api-key": "k"} and fmt.headers("") == {}
    with pytest.raises(ValueError):
        fmt.edit_call([A], "x", 2)


def test_gemini_reads_the_final_image_and_explains_an_answer_without_one():
    fmt = GeminiEditFormat("https://g", "gm")
    image = base64.b64encode(b"FINAL").decode()
    thought = base64.b64encode(b"DRAFT").decode()
    answer = fmt.read_answer({"candidates": [{"content": {"parts": [
        {"text": "sure"}, {"thought": True, "inlineData": {"mimeType": "image/png", "data": thought}},
        {"inline_data": {"mime_type": "image/png", "data": image}}]}}]})
    assert answer.images == [b"FINAL"]
    with pytest.raises(AnswerError, match=r"blocked \(blockReason SAFETY\): not allowed") as info:
        fmt.read_answer({"promptFeedback": {"blockReason": "SAFETY", "blockReasonMessage": "not allowed"}})
    assert info.value.refusal
    with pytest.raises(AnswerError, match="finishReason IMAGE_SAFETY.*the model said: I cannot") as info:
        fmt.read_answer({"candidates": [{"content": {"parts": [{"text": "I cannot"}]},
                                         "finishReason": "IMAGE_SAFETY"}]})
    assert info.value.refusal
    with pytest.raises(AnswerError, match="holds no image .finishReason STOP.; the model said: a cat") as info:
        fmt.read_answer({"candidates": [{"content": {"parts": [{"text": "a cat"}]}, "finishReason": "STOP"}]})
    assert not info.value.refusal
    with pytest.raises(AnswerError, match="no candidates"):
        fmt.read_answer({"candidates": []})


def test_gemini_bad_key_is_a_service_error_and_other_400s_are_the_rows():
    fmt = GeminiEditFormat("https://g", "gm")
    with pytest.raises(Unauthorized):
        fmt.rejection(Rejected("HTTP 400: API key not valid", 400, {"error": {
            "status": "INVALID_ARGUMENT", "details": [{"reason": "API_KEY_INVALID"}]}}))
    error = fmt.rejection(Rejected("HTTP 400: bad", 400, {"error": {"status": "INVALID_ARGUMENT"}}))
    assert "INVALID_ARGUMENT" in str(error) and not error.refusal


def test_gemini_refuses_openai_only_parameters():
    with pytest.raises(TypeError):
        GeminiEditFormat("https://g", "gm", size="1024x1024")
