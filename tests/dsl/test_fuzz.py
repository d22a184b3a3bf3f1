"""No input, however malformed, ends in a Python traceback: a clean diagnostic or success."""

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parc.dsl.check import check_file, check_text
from parc.dsl.diagnostics import ParcError

ROOT = Path(__file__).resolve().parents[2]
SEEDS = sorted(ROOT.glob("examples/*.par")) + [Path(__file__).parent / "gpt_inline.par"] + \
    sorted((Path(__file__).parent / "bad").glob("*.par"))[:10]
TEXTS = [p.read_text(errors="replace") for p in SEEDS]
FRAGMENTS = ["{", "}", "(", ")", "[", "]", ",", ":", "=", "..", "@", "*", "/", "-", "+", ";",
             "\n", " ", "#", '"', "0", "1", "-1", "3.5", "1e-3", "80 GB", "3 us", "batch",
             "model", "def", "use", "train", "parallel", "hardware", "input", "param", "for",
             "in", "output", "return", "as", "init", "S(0)@dp", "B", "P", "S(9)", "pp", "dp",
             "tp", "mesh", "sbp", "stage", "stages auto", "schedule", "1f1b", "interleaved",
             "skip", "zb_h1", "x", "d", "heads", "block", "f32", "i64", "matmul", "gelu",
             "split_heads", "std.gpt", "std.hw", "std.nope", "layers", "1000000000"]
SETTINGS = settings(max_examples=700, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


def run(text: str) -> None:
    try:
        check_text(text, "fuzz.par")
    except ParcError as exc:
        assert exc.diagnostics
        rendered = exc.render()
        assert "error[" in rendered and "Traceback" not in rendered


def run_file(data: bytes) -> None:
    """Through the file loader: bytes, not text (a BOM, invalid UTF-8)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.par"
        path.write_bytes(data)
        try:
            check_file(path)
        except ParcError as exc:
            assert exc.diagnostics
            rendered = exc.render()
            assert "error[" in rendered and "Traceback" not in rendered


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "insert", "replace", "duplicate", "swap"]))
        i = draw(st.integers(0, len(text)))
        j = min(len(text), i + draw(st.integers(0, 40)))
        if kind == "delete":
            text = text[:i] + text[j:]
        elif kind == "insert":
            text = text[:i] + draw(st.sampled_from(FRAGMENTS)) + text[i:]
        elif kind == "replace":
            text = text[:i] + draw(st.sampled_from(FRAGMENTS)) + text[j:]
        elif kind == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        else:
            lines = text.split("\n")
            a, b = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
    return text


@SETTINGS
@given(mutated())
def test_mutated_specs(text):
    run(text)


@SETTINGS
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=60).map(" ".join))
def test_token_soup(text):
    run(text)


@settings(max_examples=700, deadline=None, derandomize=True)
@given(st.binary(max_size=300))
def test_random_bytes(data):
    run(data.decode("utf-8", errors="replace"))


# (opening, closing) around a seed's expression, repeated to any depth
NESTERS = [("[", "]"), ("(", ")"), ("- ", ""), ("gelu(", ")"), ("f(", ")"),
           ("", " + 1"), ("1 + (", ")"), ("for i in 0..1 { x = ", " }")]


@st.composite
def deeply_nested(draw):
    text = draw(st.sampled_from(TEXTS))
    opening, closing = draw(st.sampled_from(NESTERS))
    depth = draw(st.sampled_from([1, 50, 99, 100, 101, 199, 200, 201, 700, 1000, 3000]))
    i = draw(st.integers(0, len(text)))
    unbalanced = draw(st.booleans())
    inner = opening * depth + "x" + ("" if unbalanced else closing * depth)
    return text[:i] + inner + text[i:]


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(deeply_nested())
def test_deep_nesting(text):
    run(text)


@st.composite
def encoded(draw):
    data = draw(st.sampled_from(TEXTS)).encode()
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data  # a byte-order mark
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(data)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xe9", b"\xed\xa0\x80", b"\x80\x80",
                                    b"\xef\xbb\xbf", b"\x00"]))
        data = data[:i] + bad + data[i:]
    return data


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(encoded())
def test_bytes_through_the_loader(data):
    run_file(data)


def test_a_byte_order_mark_is_not_part_of_the_text(tmp_path):
    path = tmp_path / "bom.par"
    path.write_bytes(b"\xef\xbb\xbf" + (ROOT / "examples/gpt_tiny.par").read_bytes())
    assert check_file(path).model.name == "gpt"
    assert check_text("\ufeff" + TEXTS[0], "bom.par") is not None


def test_invalid_utf8_is_located(tmp_path):
    path = tmp_path / "latin1.par"
    path.write_bytes(b"use std.gpt\n\nmodel m(d = 4) {  # caf\xe9\n}\n")
    try:
        check_file(path)
    except ParcError as exc:
        (diagnostic,) = exc.diagnostics
        assert (diagnostic.span.line, diagnostic.span.col) == (3, 24)
        assert "not UTF-8" in diagnostic.message and "0xe9" in diagnostic.message
        assert "caf" in exc.render()
    else:
        raise AssertionError("invalid UTF-8 was accepted")
