"""The grader: run a student's function on an exercise's cases and explain a failure.

An ``Exercise`` is data: a reference function with the student's signature (the
library's own wherever it has one), the cases to call both on, and the common mistakes
as (wrong function, hint) pairs. ``check(fn)`` calls ``fn`` on every case and compares
its answer with the reference's. At the first failure it prints the input, the expected
and the returned value (with shapes and dtypes) and what differs; then it runs each
known mistake on that case, and the first one that gives the student's answer (or
raises the student's error) shows its hint. It never raises, so an unfinished skeleton
(``NotImplementedError``) does not stop a notebook, and it returns None, so a cell
shows only the feedback. ``check.grade(fn)`` does the same and returns True / False.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor


@dataclass
class Case:
    """One call ``fn(*args)``. ``exact``: the answer must match bit for bit. A case
    with a ``note`` is a remark, not a test: tried once all others pass, it prints the
    note when the answer is not bit for bit the reference's."""

    label: str  # "hand-made: …", "random: …" or "degenerate: …"
    args: tuple
    exact: bool = False
    note: str | None = None


def table(rows: Sequence[tuple]) -> list[Case]:
    """Cases from rows ``(label, *args)``."""
    return [Case(label, tuple(args)) for label, *args in rows]


def gen(seed: int) -> torch.Generator:
    """A private random generator: building cases never touches the global one."""
    return torch.Generator().manual_seed(seed)


@dataclass
class Exercise:
    """``check(fn)``: grade ``fn`` against ``reference`` on ``cases()``."""

    title: str
    task: str  # what the student writes; the check's docstring
    reference: Callable[..., Any]
    cases: Callable[[], list[Case]]  # built when checking, not at import
    mistakes: list[tuple[Callable[..., Any], str]]  # (wrong function, its hint)
    names: tuple[str, ...] = ()  # of the parts of a tuple answer, for messages
    in_place: bool = False  # fn changes its first argument, which is the answer
    atol: float = 1e-5
    rtol: float = 1e-4

    def __post_init__(self) -> None:
        self.__doc__ = self.task

    def __call__(self, fn: Any) -> None:
        self.grade(fn)

    def grade(self, fn: Any) -> bool:
        """Print feedback on ``fn``; True when every case passes."""
        if not callable(fn):
            print(f"✗ {self.title}: expected a function, got {fmt(fn)}.")
            return False
        with torch.random.fork_rng(devices=[]):  # some references seed torch
            return self._grade(fn, getattr(fn, "__name__", "your function"))

    def answer(self, fn: Callable[..., Any], case: Case) -> tuple[Any, tuple]:
        """fn's answer on a fresh copy of the case's arguments, and those arguments."""
        args = tuple(_clone(a) for a in case.args)
        got = fn(*args)
        return (args[0] if self.in_place else got), args

    def differs(self, got: Any, expected: Any, exact: bool = False) -> str | None:
        return difference(got, expected, self.atol, self.rtol, exact, self.names)

    def _grade(self, fn: Callable[..., Any], name: str) -> bool:
        cases = self.cases()
        tests = [c for c in cases if c.note is None]
        for i, case in enumerate(tests, start=1):
            where = f"case {i}/{len(tests)} ({case.label})"
            expected, _ = self.answer(self.reference, case)
            try:
                got, args = self.answer(fn, case)
            except NotImplementedError:
                print(
                    f"✗ {self.title}: {name} is not written yet (it raised "
                    f"NotImplementedError).\n  Replace `raise NotImplementedError(...)`"
                    f" with your code, run the cell again."
                )
                return False
            except Exception as err:  # the student's bug: report it, never crash
                error = f"{type(err).__name__}: {err}{_student_line(err)}"
                hint = self.explain(case, expected, error=err) or _error_hint(err)
                title = f"{self.title}: {name} raised an error on {where}"
                _report(title, case, f"error:     {error}", hint=hint)
                return False
            changed = [j for j, a in enumerate(args) if not _same(a, case.args[j])]
            if changed and not self.in_place:
                title = f"{self.title}: {name} changed its input in place on {where}"
                j = changed[0]
                _report(title, case, f"argument {j + 1} became {fmt(args[j])}", hint=(
                    "build a new tensor (x = x - m) instead of modifying the argument "
                    "(x -= m, x.sub_(m)): the caller still needs it."))  # fmt: skip
                return False
            if problem := self.differs(got, expected, case.exact):
                title = f"{self.title}: {where} does not match the library"
                hint = self.explain(case, expected, got=got)
                _report(title, case, f"expected:  {fmt(expected)}",
                        f"got:       {fmt(got)}", f"problem:   {problem}", hint=hint)  # fmt: skip
                return False
        kinds = sorted({c.label.split(":")[0] for c in tests})
        print(f"✓ {self.title}: all {len(tests)} cases pass ({', '.join(kinds)}).")
        for case in cases:
            if case.note is not None:
                try:  # a remark on a passing answer: never fail or crash here
                    got, _ = self.answer(fn, case)
                except Exception:
                    continue
                if self.differs(got, self.answer(self.reference, case)[0], True):
                    print(f"  note:      {case.note}")
        return True

    def explain(
        self, case: Case, expected: Any, got: Any = None, error: Exception | None = None
    ) -> str | None:
        """The hint of the first known mistake that fails ``case`` as the student did:
        with the same wrong answer, or with the same error."""
        for wrong, hint in self.mistakes:
            try:
                mine, _ = self.answer(wrong, case)
            except Exception as err:
                same = error is not None and type(err) is type(error)
                if same and str(err) == str(error):
                    return hint
                continue
            fails = self.differs(mine, expected, case.exact)
            if error is None and fails and not self.differs(got, mine):
                return hint
        return None


def _report(title: str, case: Case, *lines: str, hint: str | None) -> None:
    """Print one failure: what failed, the input, the given lines and the hint."""
    print(f"✗ {title}.")
    print("  input:     " + "\n             ".join(fmt(a, 200) for a in case.args))
    for line in (*lines, f"hint:      {hint}" if hint else ""):
        if line:
            print(f"  {line}")


# --- comparing answers ------------------------------------------------------------------
def difference(
    got: Any,
    expected: Any,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    exact: bool = False,
    names: Sequence[str] = (),
    what: str = "result",
) -> str | None:
    """None if ``got`` is an acceptable answer; else what differs, in one sentence.
    For tensors, numpy arrays, numbers, strings, None, and tuples, lists or dicts of
    them; NaN matches NaN."""
    if isinstance(expected, np.ndarray):  # a numpy answer may come back as a list
        if not isinstance(got, (np.ndarray, list, Tensor)):
            return f"expected a numpy array, got a {type(got).__name__}"
        got, expected = torch.as_tensor(np.asarray(got, float)), torch.tensor(expected)
    if isinstance(expected, Tensor):
        return _tensor_difference(got, expected, atol, rtol, exact, what)
    if isinstance(expected, (tuple, list)):
        parts = [*names, *(f"{what}[{i}]" for i in range(len(names), len(expected)))]
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            kind = type(expected).__name__
            return f"return a {kind} ({', '.join(parts[: len(expected)])}), got {fmt(got, 80)}"  # fmt: skip
        for g, e, part in zip(got, expected, parts, strict=False):
            if problem := difference(g, e, atol, rtol, exact, what=part):
                return problem
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"expected a dict, got a {type(got).__name__}"
        if missing := [k for k in expected if k not in got]:
            return f"missing key(s) {missing}"
        for k in expected:
            if problem := difference(got[k], expected[k], atol, rtol, exact, what=k):
                return f"{k}: {problem}"
        return None
    if expected is None or isinstance(expected, str):
        return None if got == expected else f"expected {expected!r}, got {fmt(got)}"
    if isinstance(expected, int):
        if isinstance(got, bool) or not isinstance(got, (int, np.integer)):
            return f"expected an int, got {fmt(got)}"
        return None if got == expected else f"got {got}, expected {expected}"
    if isinstance(got, Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, (int, float, np.number)):
        return f"got {fmt(got)}, expected a number"
    nan = math.isnan(got) and math.isnan(expected)
    if nan or math.isclose(got, expected, abs_tol=atol, rel_tol=1e-6):
        return None
    return f"got {float(got):.6g}, expected {expected:.6g}"


def _tensor_difference(
    got: Any, expected: Tensor, atol: float, rtol: float, exact: bool, what: str
) -> str | None:
    if not isinstance(got, Tensor):
        return (
            f"the {what} is a {type(got).__name__}, expected a torch.Tensor (use torch "
            f"operations, not Python floats or numpy)"
        )
    if got.shape != expected.shape:
        return (
            f"the {what} has shape {tuple(got.shape)}, expected "
            f"{tuple(expected.shape)}. Check which dimension you reduced or "
            f"broadcast (unsqueeze / view)."
        )
    if expected.dtype.is_floating_point and not got.dtype.is_floating_point:
        return f"the {what} has dtype {got.dtype}; expected a floating-point tensor"
    if expected.dtype in (torch.bfloat16, torch.float16):
        if got.dtype != expected.dtype:
            return (
                f"the {what} changed dtype to {got.dtype} (was {expected.dtype}); "
                f"cast the result back: p.copy_(...) keeps the dtype."
            )
        atol = rtol = 1e-2  # half precision keeps 8 to 11 bits
    g, e = got.detach().cpu().double(), expected.detach().cpu().double()
    bad_g, bad_e = ~torch.isfinite(g), ~torch.isfinite(e)
    if bad_g.any() and not torch.equal(bad_g, bad_e):
        where = tuple(bad_g.nonzero()[0].tolist())
        return (
            f"the {what} holds NaN or inf (first at index {where}): a division by "
            f"zero or a log of 0?"
        )
    if torch.equal(g, e) or (
        not exact and torch.allclose(g, e, rtol, atol, equal_nan=True)
    ):
        return None
    diff = (g - e).abs().nan_to_num(0.0)
    i = tuple(int(j) for j in np.unravel_index(int(diff.argmax()), g.shape))
    how = "bit for bit" if exact else f"within atol={atol:g}, rtol={rtol:g}"
    return (
        f"values{'' if what == 'result' else ' of ' + what} differ {how}: the largest "
        f"difference is {diff.max().item():.3g}{f' at index {i}' if i else ''} (got "
        f"{g[i].item():.6g}, expected {e[i].item():.6g})"
    )


# --- printing and copying ---------------------------------------------------------------
def fmt(x: Any, limit: int = 400) -> str:
    """A short, readable rendering of a value, with shape and dtype for arrays."""
    if isinstance(x, (Tensor, np.ndarray)):
        kind, dtype, shape = type(x).__name__, x.dtype, tuple(x.shape)
        if isinstance(x, Tensor):
            kind, x = "torch.Tensor", x.detach().cpu()
            x = (x.float() if x.dtype.is_floating_point else x).numpy()
        values = np.array2string(x, precision=4, suppress_small=True, threshold=24,
                                 edgeitems=3, separator=", ")  # fmt: skip
        kind = "numpy array" if kind == "ndarray" else kind
        text = f"{' '.join(values.split())}  ({kind}, shape {shape}, {dtype})"
    elif isinstance(x, list) and x and all(callable(f) for f in x):
        text = f"[{len(x)} functions, each grad(theta) -> ∇L(theta) on its own batch]"
    elif isinstance(x, list) and x and all(isinstance(v, (int, float)) for v in x):
        shown = [f"{v:.4g}" for v in x]
        shown = shown if len(shown) <= 12 else [*shown[:8], "...", *shown[-3:]]
        text = f"[{', '.join(shown)}]  ({len(x)} values)"
    elif isinstance(x, (list, tuple)) and x and isinstance(x[0], Tensor):
        inner = ", ".join(fmt(t, 160) for t in x)
        text = f"[{inner}]" if isinstance(x, list) else f"({inner})"
    elif isinstance(x, float):
        text = f"{x:.6g}"
    elif callable(x):
        text = x.__doc__ or getattr(x, "__name__", "a function")
    else:
        text = repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# frames in torch, numpy and sfpo_edu are not the student's code
_LIBRARIES = tuple(
    str(Path(p).resolve().parent)
    for p in (torch.__file__, np.__file__, Path(__file__).parent)
)


def _student_line(err: BaseException) -> str:
    """' (line N in your_fn: <code>)': the innermost frame outside the libraries."""
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if not str(Path(frame.filename).resolve()).startswith(_LIBRARIES):
            code = f": {frame.line}" if frame.line else ""
            return f" (line {frame.lineno} in {frame.name}{code})"
    return ""


def _error_hint(err: Exception) -> str | None:
    text = str(err)
    if "leaf Variable that requires grad" in text or "a view of a leaf" in text:
        return (
            "parameters that require grad can only be changed in place inside "
            "`with torch.no_grad():`."
        )
    if "must match the size" in text or "shape" in text or "size of tensor" in text:
        return "check the shapes: print(x.shape) for each tensor you combine."
    if "dtype" in text or "expected scalar type" in text:
        return "two tensors have different dtypes; convert one with .to(other.dtype)."
    return None


def _clone(x: Any) -> Any:
    """A deep copy of an argument; Parameters stay Parameters (requires_grad kept)."""
    if isinstance(x, torch.nn.Parameter):
        return torch.nn.Parameter(x.detach().clone(), requires_grad=x.requires_grad)
    if isinstance(x, Tensor):
        return x.detach().clone().requires_grad_(x.requires_grad)
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(v) for v in x)
    return x.copy() if isinstance(x, np.ndarray) else x


def _same(a: Any, b: Any) -> bool:
    """Bit-for-bit equality of (nested) inputs, to detect in-place changes."""
    if isinstance(a, Tensor):
        return torch.equal(a.detach(), b.detach())
    if isinstance(a, (list, tuple)):
        return all(map(_same, a, b))
    return np.array_equal(a, b) if isinstance(a, np.ndarray) else True
