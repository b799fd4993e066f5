"""A resume is exact: every context value comes back with its type, dtype (byte order
included), shape, bytes and dict key order, whatever other value shares its bytes.

Generated with Hypothesis (profiles in tests/conftest.py); the shrunk failures it found
are kept below as plain regression tests.
"""

from __future__ import annotations

import collections
import math
from typing import Any, ClassVar
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline_runtime import Pipeline, codec, step
from pipeline_runtime.codec import Encoder, UnsupportedValue, decode, snapshot
from pipeline_runtime.storage.memory import MemoryStore


def exact(a: Any, b: Any, where: str = "value") -> str | None:
    """None if `b` is exactly `a`; else where and how they differ (memory layout aside)."""
    if type(a) is not type(b):
        return f"{where}: type {type(a).__name__} became {type(b).__name__}"
    if isinstance(a, np.ndarray):
        if a.dtype.str != b.dtype.str or a.shape != b.shape or a.tobytes() != b.tobytes():
            return f"{where}: {a.dtype.str}{a.shape} became {b.dtype.str}{b.shape} (or other bytes)"
        return None
    if isinstance(a, np.generic):
        return None if a.dtype.str == b.dtype.str and a.tobytes() == b.tobytes() else f"{where}: {a!r} became {b!r}"
    if isinstance(a, float):
        return None if math.copysign(1, a) == math.copysign(1, b) and a == b else f"{where}: {a!r} became {b!r}"
    if isinstance(a, dict):
        if list(a) != list(b):
            return f"{where}: keys {list(a)} became {list(b)}"
        return next((d for k in a if (d := exact(a[k], b[k], f"{where}[{k!r}]"))), None)
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return f"{where}: length {len(a)} became {len(b)}"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := exact(x, y, f"{where}[{i}]"))), None)
    return None if a == b else f"{where}: {a!r} became {b!r}"


def roundtrip(value: Any) -> Any:
    stored: dict[str, bytes] = {}
    node, _ = Encoder(lambda path, data: stored.__setitem__(path, bytes(data))).resolve(snapshot(value))
    return decode(node, stored.__getitem__)


# -- strategies ---------------------------------------------------------------------------

DTYPES = st.one_of(
    hnp.integer_dtypes(endianness="="),
    hnp.integer_dtypes(endianness=">"),
    hnp.unsigned_integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?"),  # float16 to float64, both byte orders
    hnp.complex_number_dtypes(endianness="?"),
    hnp.boolean_dtypes(),
    hnp.unicode_string_dtypes(max_len=4),
    hnp.byte_string_dtypes(max_len=4),
    hnp.datetime64_dtypes(),
)


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    arr = draw(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)))
    layout = draw(st.sampled_from(["c", "fortran", "strided"]))
    if layout == "fortran":
        arr = np.asfortranarray(arr)
    elif layout == "strided" and arr.ndim:
        arr = arr[::2]
    return arr


def scalars(arr: np.ndarray) -> Any:
    return arr.reshape(-1)[0] if arr.size else arr.dtype.type(0) if arr.dtype.kind in "biufc" else arr


# Equal bytes, other meaning: the values that collided before the fix.
COLLIDING = st.sampled_from(
    [
        np.zeros((2, 4), np.int32),
        np.zeros(4, np.int64),
        np.zeros(32, np.uint8),
        bytes(32),
        bytearray(32),
        np.zeros((0, 4), np.int32),
        np.zeros(0, np.int64),
        np.zeros((4, 0), np.float16),
        b"",
        np.zeros(8, ">i4"),
        np.zeros(8, "<i4"),
        np.zeros((), np.float64),
        np.float64(0.0),
        np.int64(0),
    ]
)

LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.binary(max_size=1100),
    st.binary(max_size=40).map(bytearray),  # around the 1 KiB inline limit
    arrays(),
    arrays().map(scalars),
    COLLIDING,
)

VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=5), inner, max_size=4),
    ),  # keys in drawn order
    max_leaves=12,
)


@pytest.mark.slow
@given(st.dictionaries(st.text(min_size=1, max_size=6), VALUES, max_size=6), st.booleans())
def test_every_accepted_context_decodes_exactly(context: dict[str, Any], inline: bool) -> None:
    # Most drawn arrays are small enough to be kept inside the commit; without inlining,
    # the same values go through artifacts, so both paths meet every generated value.
    with mock.patch.object(codec, "INLINE_ARRAY_LIMIT", codec.INLINE_ARRAY_LIMIT if inline else -1):
        back = roundtrip(context)
    assert exact(context, back) is None, exact(context, back)


# -- regression tests: what the generated cases found ---------------------------------------


def test_equal_bytes_other_dtype_or_shape_stay_apart() -> None:
    value = {
        "a": np.zeros((2, 4), np.int32),
        "b": np.zeros(4, np.int64),
        "c": bytes(32),
        "d": np.zeros((0, 4), np.int32),
        "e": np.zeros(0, np.int64),
        "f": np.zeros(4, ">i8"),
    }
    assert exact(value, roundtrip(value)) is None


def test_tuples_numpy_scalars_and_bytearrays_keep_their_types() -> None:
    value = {
        "t": (1, "x", (2.5,)),
        "s": np.float32(1.5),
        "i": np.int64(-3),
        "b": np.bool_(True),
        "ba": bytearray(b"xy"),
        "big": bytearray(2000),
        "z": -0.0,
        "order": {"b": 1, "a": 2},
    }
    back = roundtrip(value)
    assert exact(value, back) is None
    assert isinstance(back["ba"], bytearray)  # and mutable, as it was


@pytest.mark.parametrize(
    ("value", "what"),
    [
        pytest.param(np.ma.masked_array([1, 2], mask=[False, True]), "MaskedArray is a subclass of ndarray"),
        pytest.param(collections.defaultdict(list), "defaultdict is a subclass of dict", id="defaultdict"),
        pytest.param(collections.OrderedDict(a=1), "OrderedDict is a subclass of dict", id="ordereddict"),
        pytest.param(float("inf"), "not a finite float", id="inf"),
        pytest.param(10**5000, "4300 digits", id="huge-int"),
        pytest.param(memoryview(b"x"), "memoryview cannot be checkpointed", id="memoryview"),
    ],
)
def test_values_that_would_not_come_back_exactly_are_refused_by_name(value: Any, what: str) -> None:
    with pytest.raises(UnsupportedValue, match=what):
        snapshot({"k": value}, "ctx")


def test_datetime_arrays_and_empty_numpy_strings_roundtrip() -> None:
    # Shrunk by Hypothesis: the buffer protocol has no datetime64; np.str_("") has itemsize 0.
    value = {
        "t": np.array("NaT", dtype="datetime64[Y]"),
        "s": np.str_(""),
        "b": np.bytes_(b""),
        "d": np.arange(3).astype("m8[s]"),
    }
    assert exact(value, roundtrip(value)) is None


class Collide(Pipeline):
    """The values of the issue, then a step that fails once: the resume must see them as written."""

    name = "collide"
    failed = False
    seen: ClassVar[list[str]] = []

    @step
    def make(self, ctx: Any) -> None:
        ctx["regions"] = np.zeros((0, 4), np.int32)
        ctx["flat"] = np.zeros(0, np.int64)
        ctx["grid"] = np.zeros((2, 4), np.int32)
        ctx["wide"] = np.zeros(4, np.int64)
        ctx["raw"] = bytes(32)

    @step
    def use(self, ctx: Any) -> None:
        if not Collide.failed:
            Collide.failed = True
            raise RuntimeError("once")
        stacked = np.concatenate([ctx["regions"], np.ones((1, 4), np.int32)])  # needs a 2-D int32 array
        Collide.seen = [ctx[k].dtype.str + str(ctx[k].shape) for k in ("flat", "grid", "wide")] + [
            type(ctx["raw"]).__name__,
            str(stacked.shape),
        ]


@pytest.mark.parametrize("limit", [codec.INLINE_ARRAY_LIMIT, -1], ids=["inline", "artifacts"])
def test_resume_after_a_failed_step_sees_colliding_values_as_written(limit: int) -> None:
    """The collision was between artifacts; these arrays are small enough to be kept in the
    commit now, so the case runs both ways."""
    store = MemoryStore(f"memory://collide{limit}")
    Collide.failed = False
    with mock.patch.object(codec, "INLINE_ARRAY_LIMIT", limit):
        with pytest.raises(Exception, match="once"):
            Collide(store=store, run_id="c", retain="Always").run()
        summary = Collide(store=store, run_id="c", retain="Always").run(resume_from_checkpoint=True)
    assert summary.skipped == ["make"] and summary.executed == ["use"]
    assert Collide.seen == ["<i8(0,)", "<i4(2, 4)", "<i8(4,)", "bytes", "(1, 4)"]
