"""A body that is not sent as JSON gets a 415 in OpenAI's error shape, and a record."""

import json

import pytest

from monitoring.models import RequestRecord

pytestmark = pytest.mark.django_db(transaction=True)

BODY = json.dumps({"model": "echo", "messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
async def test_non_json_content_type_is_415(client, echo_model, path, content_type):
    response = await client.post(path, content=BODY, headers={"Content-Type": content_type})
    assert response.status_code == 415, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "error": {
            "message": "Send the request body as JSON with 'Content-Type: application/json'.",
            "type": "invalid_request_error",
            "param": None,
            "code": "unsupported_media_type",
        }
    }
    record = await RequestRecord.objects.aget()
    assert record.status_code == 415 and record.error_type == "unsupported_media_type"


async def test_the_same_body_as_json_is_served(client, echo_model):
    response = await client.post(
        "/v1/chat/completions", content=BODY, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hi"
