"""Messages stay short and are never cut mid-word: in errors the server answers, in
MLflow's scoring server, and in what the platform client reports."""

from __future__ import annotations

import socket

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from datamint_core._messages import MAX_MESSAGE_CHARS, shorten


@given(
    text=st.text(min_size=0, max_size=3000),
    limit=st.integers(min_value=10, max_value=1500),
)
@example(text="aaaaaaaa, bbbbbbbb", limit=12)  # cut at the space, the comma dropped
def test_shorten_keeps_a_short_text_and_cuts_a_long_one_at_a_word_with_an_ellipsis(text, limit):
    shown = shorten(text, limit)

    assert len(shown) <= limit
    if len(text) <= limit:
        assert shown == text
        return
    assert shown.endswith("…")
    kept = shown[:-1]
    assert text.startswith(kept)
    following = text[len(kept) :]
    # Cut at a word boundary, unless no boundary lies in the second half of the limit.
    # (Punctuation before the cut is dropped: "word, next" cut at the space shows "word…".)
    words_cut = following.lstrip(",;:(")[:1].strip() != "" and kept[-1:].strip() != ""
    if words_cut:
        assert not any(character.isspace() for character in text[limit // 2 : limit])


def test_the_unreachable_platform_message_ends_at_a_word():
    from mlflow.utils.rest_utils import MlflowHostCreds

    from datamint_core import PlatformUnreachableError
    from datamint_core.platform.config import PlatformSettings
    from datamint_core.platform.store import check_platform_access

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    host = f"http://127.0.0.1:{closed}"
    settings = PlatformSettings(api_url=host, mlflow_url=host, timeout_s=2.0)

    with pytest.raises(PlatformUnreachableError) as unreachable:
        check_platform_access(MlflowHostCreds(host), settings)

    message = str(unreachable.value)
    reason = message.split(" s (", 1)[1].rsplit("). Check DATAMINT_MLFLOW_URL", 1)[0]
    assert len(reason) <= 300
    last_word = reason.rstrip("…").split()[-1]
    assert reason.endswith("…") or reason.endswith(")")
    assert last_word.isprintable() and not reason.endswith("Failed to e")
    if reason.endswith("…"):
        assert reason[: -1].rstrip() == reason[:-1]  # cut at a space, not inside a word


def test_mlflows_scoring_server_cannot_echo_the_input_into_our_error():
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    from datamint_core._pyfunc import _ClientError

    error = _ClientError("Unknown prediction mode 'x'; valid values are: 'default'.",
                         INVALID_PARAMETER_VALUE)  # fmt: skip
    original = error.message
    # What mlflow.pyfunc.scoring_server.invocations does with a predict error:
    error.message = f"Failed to predict data '{'A' * 400_000}'. \nError: {error.message}"
    long = _ClientError("word " * 100_000, INVALID_PARAMETER_VALUE)

    assert error.message == original
    assert '"message": "Unknown prediction mode' in error.serialize_as_json()
    assert error.get_http_status_code() == 400
    assert len(long.message) <= MAX_MESSAGE_CHARS and long.message.endswith("word…")
    assert len(str(long)) <= MAX_MESSAGE_CHARS


@pytest.mark.parametrize(
    "raised",
    [
        "cannot open file:///srv/secret/models/w.pt",
        "cannot open file:/srv/secret/models/w.pt",
        "cannot open ~/secret/models/w.pt",
        "cannot open ~svc/secret/models/w.pt",
        "cannot open /srv/secret/models/w.pt",
        "cannot open C:\\secret\\models\\w.pt",
    ],
)
def test_a_model_failure_never_tells_the_client_a_server_path_however_it_is_written(raised):
    from datamint_core._messages import model_failure_message

    message = model_failure_message(RuntimeError(raised))

    assert message == "The model failed: RuntimeError: cannot open <path>"


def test_a_model_failure_keeps_the_punctuation_after_a_path_and_urls_of_other_schemes():
    from datamint_core._messages import model_failure_message

    message = model_failure_message(RuntimeError("at /srv/a/w.pt, or s3://bucket/a/w.pt."))

    assert message == "The model failed: RuntimeError: at <path>, or s3://bucket/a/w.pt."


def test_shorten_cuts_tab_separated_words_at_a_tab_not_inside_a_word():
    assert shorten("word1\tword2\tword3\tword4", 15) == "word1\tword2…"
