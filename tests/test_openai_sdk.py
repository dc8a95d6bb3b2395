"""The official ``openai`` Python SDK as a real client of the gateway
(CONTRACT 4.1, 4.2): what users run in production must just work.

The SDK is synchronous, so it runs in a thread while this reactor keeps
serving the mock upstream the gateway calls.
"""

from __future__ import annotations

import openai
import pytest
import pytest_twisted
from twisted.internet import threads

from tests.conftest import secret


@pytest.fixture(scope="module")
def sdk_setup(gateway, upstream):
    state = {}

    async def build():
        pc = {"api_key": secret("sk-provider"), "api_base": upstream.base_url}
        await gateway.add_model("sdk-gpt", "openai/gpt-4o-mini", pc)
        await gateway.add_model("sdk-demo", "mock/demo", {})
        state["key"] = await gateway.add_key(["sdk-gpt", "sdk-demo"])

    from twisted.internet import defer

    pytest_twisted.blockon(defer.ensureDeferred(build()))
    state["client"] = openai.OpenAI(
        api_key=state["key"], base_url=gateway.proxy + "/v1", max_retries=0, timeout=10
    )
    return state


def in_thread(f, *args, **kwargs):
    return threads.deferToThread(f, *args, **kwargs)


@pytest_twisted.ensureDeferred
async def test_sdk_chat_completion_through_the_openai_provider(sdk_setup, upstream):
    upstream.reset()
    client = sdk_setup["client"]
    completion = await in_thread(
        client.chat.completions.create,
        model="sdk-gpt",
        messages=[{"role": "user", "content": "Say hi"}],
        temperature=0,
    )
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"  # the upstream's own answer, relayed
    assert completion.choices[0].message.role == "assistant"
    assert completion.usage.total_tokens == 7
    (seen,) = upstream.requests
    assert seen.json["model"] == "gpt-4o-mini" and seen.json["temperature"] == 0


@pytest_twisted.ensureDeferred
async def test_sdk_chat_with_the_mock_model(sdk_setup):
    completion = await in_thread(
        sdk_setup["client"].chat.completions.create,
        model="sdk-demo",
        messages=[{"role": "user", "content": "ping"}],
    )
    assert completion.choices[0].message.content == "ping"
    # the mock's estimate (twisted_gw.tokens): '[{"role":"user","content":"ping"}]' is 34
    # characters, ceil(34 / 4) + 4 = 13; "ping" answered, 1
    assert completion.usage.prompt_tokens == 13 and completion.usage.completion_tokens == 1


@pytest_twisted.ensureDeferred
async def test_sdk_embeddings(sdk_setup):
    result = await in_thread(
        sdk_setup["client"].embeddings.create, model="sdk-gpt", input=["one", "two"]
    )
    assert result.model == "sdk-gpt" and len(result.data) == 2
    mock = await in_thread(sdk_setup["client"].embeddings.create, model="sdk-demo", input="x")
    assert len(mock.data[0].embedding) == 16


@pytest_twisted.ensureDeferred
async def test_sdk_lists_models(sdk_setup):
    page = await in_thread(sdk_setup["client"].models.list)
    assert sorted(m.id for m in page.data) == ["sdk-demo", "sdk-gpt"]


@pytest_twisted.ensureDeferred
async def test_sdk_sees_contract_errors_as_typed_exceptions(sdk_setup, gateway):
    client = sdk_setup["client"]
    with pytest.raises(openai.BadRequestError) as info:
        await in_thread(
            client.chat.completions.create,
            model="nope",
            messages=[{"role": "user", "content": "x"}],
        )
    assert info.value.status_code == 400 and info.value.code == "model_not_found"
    assert info.value.message.endswith("Model 'nope' not found")

    stranger = openai.OpenAI(api_key="sk-wrong", base_url=gateway.proxy + "/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        await in_thread(
            stranger.chat.completions.create,
            model="sdk-demo",
            messages=[{"role": "user", "content": "x"}],
        )
    assert info.value.status_code == 401


@pytest_twisted.ensureDeferred
async def test_sdk_sees_upstream_outage_as_server_error(sdk_setup, upstream):
    upstream.reset()
    upstream.set_json("/v1/chat/completions", {"error": {"message": "down"}}, status=500)
    with pytest.raises(openai.InternalServerError) as info:
        await in_thread(
            sdk_setup["client"].chat.completions.create,
            model="sdk-gpt",
            messages=[{"role": "user", "content": "x"}],
        )
    assert info.value.status_code == 502 and info.value.code == "provider_error"
