"""No input, however malformed, ends in a Python traceback: a clean diagnostic or success."""

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parc.dsl.check import check_text
from parc.dsl.diagnostics import ParcError

ROOT = Path(__file__).resolve().parents[2]
SEEDS = sorted(ROOT.glob("examples/*.par")) + [Path(__file__).parent / "gpt_inline.par"] + \
    sorted((Path(__file__).parent / "bad").glob("*.par"))[:10]
TEXTS = [p.read_text() for p in SEEDS]
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
