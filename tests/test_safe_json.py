"""The bounded JSON parser every outside input goes through."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flchain import safe_json
from flchain.safe_json import JsonFormatError, JsonLimitError

NESTED_SIZES = [75_000, 1 << 20, 8 << 20]


def nested(size: int, open_: bytes = b"[", close: bytes = b"]") -> bytes:
    return open_ * (size // 2) + close * (size // 2)


def test_parses_ordinary_documents():
    assert safe_json.loads(b'{"a": [1, {"b": "x"}], "c": null}') == {
        "a": [1, {"b": "x"}],
        "c": None,
    }
    assert safe_json.loads('"text"') == "text"


@pytest.mark.parametrize("size", NESTED_SIZES)
def test_deep_nesting_is_refused_before_parsing(size):
    with pytest.raises(JsonLimitError) as caught:
        safe_json.loads(nested(size), max_bytes=16 << 20, max_depth=64)
    assert caught.value.reason == "too_deep"


def test_size_is_checked_first():
    with pytest.raises(JsonLimitError) as caught:
        safe_json.loads(b"[" + b"1," * 1000 + b"1]", max_bytes=100)
    assert caught.value.reason == "oversize"


def test_brackets_inside_strings_do_not_count():
    text = json.dumps({"a": "[[[[{{{{" * 100, "b": ['\\"[[']})
    assert safe_json.nesting_depth(text.encode()) == 2
    assert safe_json.loads(text, max_depth=2)["b"] == ['\\"[[']


def test_depth_limit_is_inclusive():
    assert safe_json.loads(b"[[[1]]]", max_depth=3) == [[[1]]]
    with pytest.raises(JsonLimitError):
        safe_json.loads(b"[[[[1]]]]", max_depth=3)


@pytest.mark.parametrize("bad", [b"NaN", b"[Infinity]", b"{", b"\xff\xfe", b""])
def test_malformed_input_is_a_format_error(bad):
    with pytest.raises(JsonFormatError):
        safe_json.loads(bad)


def test_load_file_refuses_a_large_file_without_reading_it_whole(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b"[" + b"0," * 10_000 + b"0]")
    with pytest.raises(JsonLimitError):
        safe_json.load_file(path, max_bytes=1000)
    assert safe_json.load_file(path, max_bytes=1 << 20)[:2] == [0, 0]


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        ),
        max_leaves=30,
    )
)
def test_depth_scan_agrees_with_the_structure(value):
    def depth(v):
        if isinstance(v, list):
            return 1 + max((depth(x) for x in v), default=0)
        if isinstance(v, dict):
            return 1 + max((depth(x) for x in v.values()), default=0)
        return 0

    text = json.dumps(value).encode()
    assert safe_json.nesting_depth(text) == depth(value)
    assert safe_json.loads(text, max_depth=64) == value


def test_survives_nested_bodies_where_eth_account_raised_the_recursion_limit():
    """In a process that imported eth_account (py_ecc sets the recursion limit to 100,000),
    plain json.loads of these bodies overflows the C stack; the bounded parser refuses them."""
    script = (
        "import sys, eth_account\n"
        "from flchain import safe_json\n"
        "assert sys.getrecursionlimit() >= 100000, sys.getrecursionlimit()\n"
        f"for size in {NESTED_SIZES}:\n"
        "    for o, c in ((b'[', b']'), (b'{\"a\":', b'}')):\n"
        "        body = o * (size // len(o) // 2) + c * (size // len(o) // 2)\n"
        "        try:\n"
        "            safe_json.loads(body, max_bytes=16 << 20)\n"
        "        except safe_json.JsonLimitError as exc:\n"
        "            print(exc.reason)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["too_deep"] * 6
