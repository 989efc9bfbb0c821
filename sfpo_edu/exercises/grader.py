"""The grader: run a student's function on an exercise's cases and explain a failure.

For the first case ``fn`` fails, ``check(fn)`` prints the input, the expected and the
returned value (shapes and dtypes), what differs, and the hint of the first common
mistake that answers (or raises) as ``fn`` did. It returns None and never raises, so a
notebook cell shows only the feedback; ``check.grade(fn)`` returns True / False.
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import sfpo_edu


@dataclass
class Case:
    """One call ``fn(*args)``; ``exact``: bit for bit. A case with a ``note`` is a
    remark: once all others pass, the note shows if the answer is not exact."""

    label: str  # "hand-made: …", "random: …" or "degenerate: …"
    args: tuple
    exact: bool = False
    note: str | None = None


def gen(seed: int) -> torch.Generator:
    """A private random generator: building cases never touches the global one."""
    return torch.Generator().manual_seed(seed)


@dataclass
class Exercise:
    """A reference function, its cases (rows ``(label, *args)`` or ``Case``s, built
    when checking) and its common mistakes; ``check(fn)`` grades ``fn`` on them."""

    task: str  # "title: what the student writes"; the check's docstring
    reference: Callable[..., Any]  # the library's wherever it has one
    cases: Callable[[], list[tuple | Case]]
    mistakes: dict[str, Callable[..., Any]]  # hint → the wrong function it explains
    names: tuple[str, ...] = ()  # of the parts of a tuple answer, for messages
    in_place: bool = False  # fn changes its first argument, which is the answer
    atol: float = 1e-5
    rtol: float = 1e-4

    def __post_init__(self) -> None:
        self.__doc__, self.title = self.task, self.task.split(":")[0]

    def __call__(self, fn: Any) -> None:
        self.grade(fn)

    def grade(self, fn: Any) -> bool:
        """Print feedback on ``fn``; True when every case passes."""
        if not callable(fn):
            print(f"✗ {self.title}: expected a function, got {show(fn)}.")
            return False
        with torch.random.fork_rng(devices=[]):  # some references seed torch
            cases = [
                c if isinstance(c, Case) else Case(c[0], c[1:]) for c in self.cases()
            ]
            tests = [case for case in cases if case.note is None]
            for i, case in enumerate(tests, start=1):
                if failure := self.failure(fn, case):
                    what, lines, hint = failure
                    name = getattr(fn, "__name__", "your function")
                    where = f"case {i}/{len(tests)} ({case.label})"
                    print(f"✗ {self.title}: {name} {what} {where}.")
                    shown = "\n             ".join(show(arg, 200) for arg in case.args)
                    lines = [f"input:     {shown}", *lines]
                    lines += [f"hint:      {hint}"] if hint else []
                    print("\n".join(f"  {line}" for line in lines))
                    return False
            kinds = ", ".join(sorted({case.label.split(":")[0] for case in tests}))
            print(f"✓ {self.title}: all {len(tests)} cases pass ({kinds}).")
            for case in cases:  # remarks on a passing answer
                if case.note is not None and self.failure(fn, case):
                    print(f"  note:      {case.note}")
        return True

    def answer(self, fn: Callable[..., Any], case: Case) -> tuple[Any, tuple]:
        """fn's answer on a fresh copy of the case's arguments, and those arguments."""
        args = copy.deepcopy(case.args)
        got = fn(*args)
        return (args[0] if self.in_place else got), args

    def failure(self, fn: Callable, case: Case) -> tuple[str, list, str | None] | None:
        """None if ``fn`` passes ``case``; else what happened, the lines that show it
        and a hint."""
        expected, _ = self.answer(self.reference, case)
        try:
            got, args = self.answer(fn, case)
        except NotImplementedError:
            todo = "replace `raise NotImplementedError(...)` with your code."
            return "is not written yet (it raised NotImplementedError) on", [], todo
        except Exception as err:  # the student's bug: report it, never crash
            error = f"error:     {type(err).__name__}: {err}{_student_line(err)}"
            hint = self.explain(case, expected, error=err) or _error_hint(str(err))
            return "raised an error on", [error], hint
        if not self.in_place and (changed := _changed(args, case.args)):
            return "changed its input in place on", [changed], IN_PLACE
        if problem := self.differs(got, expected, case.exact):
            shown = [f"expected:  {show(expected)}", f"got:       {show(got)}"]
            hint = self.explain(case, expected, got)
            return (
                "does not match the library on",
                [*shown, f"problem:   {problem}"],
                hint,
            )
        return None

    def explain(
        self, case: Case, expected: Any, got: Any = None, error: Any = None
    ) -> str | None:
        """The hint of the first known mistake that fails ``case`` as the student did:
        with the same wrong answer, or with the same error."""
        for hint, wrong in self.mistakes.items():
            try:
                mine, _ = self.answer(wrong, case)
            except Exception as err:
                if error is not None and repr(err) == repr(error):
                    return hint
                continue
            fails = self.differs(mine, expected, case.exact)
            if error is None and fails and not self.differs(got, mine, exact=False):
                return hint
        return None

    def differs(self, got: Any, expected: Any, exact: bool) -> str | None:
        """None if ``got`` is an acceptable answer; else what differs: torch.testing's
        report (shapes, mismatched elements, largest differences), with advice."""
        if expected is None or isinstance(expected, (str, int)):  # exact answers
            same = type(got) is type(expected) or isinstance(got, np.integer)
            return None if same and got == expected else f"expected {expected!r}"
        if isinstance(expected, float) and isinstance(got, (int, np.number, Tensor)):
            got = float(got) if getattr(got, "numel", lambda: 1)() == 1 else got
        if isinstance(expected, np.ndarray) and isinstance(got, list):
            got = np.asarray(got, dtype=float)
        atol, rtol = (0.0, 0.0) if exact else (self.atol, self.rtol)
        options = dict(atol=atol, rtol=rtol, equal_nan=True, check_dtype=False)
        try:
            torch.testing.assert_close(got, expected, **options)
        except (AssertionError, TypeError, ValueError) as err:
            problem = " ".join(str(err).split())
            for i, name in enumerate(self.names):
                problem = problem.replace(f"for item [{i}]", f"for {name}")
            if "'shape'" in problem:
                problem += " Check which dimension you reduced or broadcast (unsqueeze / view)."
            if "nan at" in problem:
                problem += " NaN in your answer: a division by zero or a log of 0?"
            return problem
        return None


IN_PLACE = "build a new tensor (x = x - m), not x -= m: the caller still needs x."


def show(x: Any, limit: int = 400) -> str:
    """A short, readable rendering of a value, with shape and dtype for arrays."""
    if isinstance(x, list) and x and all(isinstance(v, (int, float)) for v in x):
        text = f"{_values(x)} ({len(x)} values)"
    elif isinstance(x, (Tensor, np.ndarray)):
        kind = "torch.Tensor" if isinstance(x, Tensor) else "numpy array"
        floats = isinstance(x, Tensor) and x.is_floating_point()
        values = _values(x.detach().float() if floats else x)
        text = f"{values} ({kind}, shape {tuple(x.shape)}, {x.dtype})"
    elif isinstance(x, (list, tuple)) and x and isinstance(x[0], Tensor):
        text = f"[{', '.join(show(t, 160) for t in x)}]"
    elif isinstance(x, list) and x and callable(x[0]):
        text = f"[{len(x)} functions, each {show(x[0])}]"
    elif callable(x):
        text = x.__doc__ or getattr(x, "__name__", "a function")
    else:
        text = f"{x:.6g}" if isinstance(x, float) else repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _values(x: Any) -> str:
    """The values of an array on one line, 4 digits, the middle elided."""
    options = dict(precision=4, suppress_small=True, threshold=24, edgeitems=3)
    return " ".join(np.array2string(np.asarray(x), separator=", ", **options).split())


def _changed(args: tuple, before: tuple) -> str | None:
    """'argument N became …' for the first array argument ``fn`` changed in place."""
    for i, (arg, old) in enumerate(zip(args, before, strict=True)):
        arrays = isinstance(arg, (Tensor, np.ndarray))
        if arrays and not torch.equal(torch.as_tensor(arg), torch.as_tensor(old)):
            return f"argument {i + 1} became {show(arg)}"
    return None


# frames in torch, numpy and sfpo_edu are not the student's code
_LIBRARIES = tuple(
    str(Path(m.__file__).resolve().parent) for m in (torch, np, sfpo_edu)
)


def _student_line(err: BaseException) -> str:
    """' (line N in your_fn: <code>)': the innermost frame outside the libraries."""
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if not str(Path(frame.filename).resolve()).startswith(_LIBRARIES):
            code = f": {frame.line}" if frame.line else ""
            return f" (line {frame.lineno} in {frame.name}{code})"
    return ""


def _error_hint(text: str) -> str | None:
    """A general hint for an error that no known mistake explains."""
    if "leaf Variable that requires grad" in text or "a view of a leaf" in text:
        return "change parameters in place only inside `with torch.no_grad():`."
    if "must match the size" in text or "shape" in text or "size of tensor" in text:
        return "check the shapes: print(x.shape) for each tensor you combine."
    if "dtype" in text or "expected scalar type" in text:
        return "two tensors have different dtypes; convert one with .to(other.dtype)."
    return None
