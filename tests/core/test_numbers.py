"""The one parser of numbers users type (datamint_core._numbers): flags, variables, settings."""

from __future__ import annotations

import contextlib
import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datamint_core._limits import RequestLimits, request_limits
from datamint_core._numbers import (
    AMOUNT,
    COUNT,
    MILLIMETRES,
    PORT,
    SECONDS,
    SIZE,
    ValueKind,
    parse,
    parse_size,
)
from datamint_core.batch._local import threads_per_worker
from datamint_core.cli import main
from datamint_core.serving.config import ServerConfig

KINDS = {
    "COUNT": COUNT,
    "AMOUNT": AMOUNT,
    "SIZE": SIZE,
    "SECONDS": SECONDS,
    "MILLIMETRES": MILLIMETRES,
    "PORT": PORT,
}


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        (COUNT, "4", 4),
        (COUNT, " 4096 ", 4096),
        (COUNT, 7, 7),
        (AMOUNT, "1M", 1024**2),
        (SIZE, "100", 100),
        (SIZE, "512K", 512 * 1024),
        (SIZE, "1.5M", int(1.5 * 1024**2)),
        (SIZE, "512MiB", 512 * 1024**2),
        (SIZE, "512mb", 512 * 1024**2),
        (SIZE, "2GB", 2 * 1024**3),
        (SIZE, "2 GiB", 2 * 1024**3),
        (SIZE, "1T", 1024**4),
        (SIZE, 7, 7),
        (SECONDS, "0.5", 0.5),
        (SECONDS, 30, 30.0),
        (MILLIMETRES, "0", 0.0),
        (PORT, "0", 0),
        (PORT, "65535", 65535),
    ],
)
def test_each_kind_reads_what_it_accepts(kind: ValueKind, text, expected) -> None:
    value = parse(kind, text, "x")
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        (COUNT, "0"),
        (COUNT, "-3"),
        (COUNT, "2.5"),
        (COUNT, "1K"),
        (COUNT, True),
        (COUNT, 2.0),
        (SIZE, "0"),
        (SIZE, "lots"),
        (SIZE, "1iB"),
        (SIZE, "MB"),
        (SIZE, "0.1"),
        (SIZE, "inf"),
        (SIZE, "1e400"),
        (SIZE, True),
        (SECONDS, "0"),
        (SECONDS, "nan"),
        (SECONDS, "inf"),
        (SECONDS, "-1"),
        (SECONDS, False),
        (MILLIMETRES, "-0.5"),
        (PORT, "65536"),
        (PORT, "-1"),
        (PORT, "http"),
        (COUNT, None),
    ],
)
def test_a_bad_value_names_itself_and_what_is_accepted(kind: ValueKind, text) -> None:
    with pytest.raises(ValueError) as raised:
        parse(kind, text, "--flag")
    assert str(raised.value) == f"--flag={text!r} is not valid; accepted: {kind.accepted}."


_VALUES = st.one_of(
    st.text(),
    st.text(alphabet="0123456789.eE+- KkMmGgTtiIbB_"),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
)


@settings(max_examples=400, deadline=None)
@given(kind_name=st.sampled_from(sorted(KINDS)), value=_VALUES)
def test_any_value_is_a_number_of_the_kind_or_the_message_never_a_traceback(
    kind_name: str, value
) -> None:
    kind = KINDS[kind_name]
    try:
        number = parse(kind, value, "SETTING")
    except ValueError as error:
        assert str(error) == f"SETTING={value!r} is not valid; accepted: {kind.accepted}."
        return
    assert isinstance(number, (int, float)) and not isinstance(number, bool)
    if kind is PORT:
        assert 0 <= number <= 65535
    elif kind is MILLIMETRES:
        assert number >= 0
    else:
        assert number > 0


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0))
def test_a_bad_flag_value_is_a_usage_error_naming_the_flag_never_a_traceback(text: str) -> None:
    if "\x00" in text:
        return  # no process can be given one in its arguments
    try:
        number = COUNT.read(text)
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is not None:
        return  # a valid count: the command would go on and run
    stderr = io.StringIO()
    with pytest.raises(SystemExit) as exit_code, contextlib.redirect_stderr(stderr):
        main(["batch", "-m", "m", "-i", "i", "-o", "o", f"--rows-per-part={text}"])
    assert exit_code.value.code == 2
    err = stderr.getvalue()
    assert f"argument --rows-per-part: {text!r} is not valid; accepted: a positive integer." in err
    assert "Traceback" not in err


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1))
def test_a_bad_variable_names_the_variable_and_what_is_accepted(text: str) -> None:
    text = text.replace("\x00", "")
    if not text.strip():
        return  # a blank variable is an unset one: the default applies
    variables = {
        "DATAMINT_SERVE_MAX_SLICES": (COUNT, RequestLimits.from_env),
        "DATAMINT_SERVE_MAX_REQUEST_SIZE": (SIZE, ServerConfig.resolve),
        "DATAMINT_SERVE_READ_TIMEOUT": (SECONDS, ServerConfig.resolve),
        "DATAMINT_BATCH_THREADS_PER_WORKER": (COUNT, lambda: threads_per_worker(2)),
    }
    for variable, (kind, read) in variables.items():
        saved = os.environ.get(variable)
        os.environ[variable] = text
        try:
            read()
        except ValueError as error:
            assert str(error) == (
                f"{variable}={text.strip()!r} is not valid; accepted: {kind.accepted}."
            )
        finally:
            if saved is None:
                del os.environ[variable]
            else:
                os.environ[variable] = saved


def test_server_settings_and_request_limits_name_the_argument_given() -> None:
    with pytest.raises(ValueError, match=r"^max_json_values='many' is not valid; accepted: a "):
        ServerConfig.resolve(max_json_values="many")
    with pytest.raises(ValueError, match=r"^max_decoded_bytes='big' is not valid; accepted: a "):
        with request_limits(max_decoded_bytes="big"):
            pass
    assert parse_size("2GB") == 2 * 1024**3
    with pytest.raises(ValueError, match=r"^Size='x' is not valid; accepted: a byte count"):
        parse_size("x")
