"""The grader: ``check(fn)`` runs ``fn`` on an exercise's cases and, for the first one
it fails, prints the input, the expected and the returned value, what differs and the
hint of the first common mistake that answers (or raises) the same way. It returns None
and never raises for the student's errors, so a notebook cell shows only the feedback;
``grade`` returns a bool. An error in the reference is a library bug: it raises."""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

import sfpo_edu

SKELETON_HINT = "replace `raise NotImplementedError(...)` with your code."
IN_PLACE = "build a new value (x = x - m), not x -= m or x.append: the caller needs x."
LIBRARIES = (torch.__path__[0], np.__path__[0], sfpo_edu.__path__[0])  # not the student


def gen(seed: int) -> torch.Generator:
    """A private random generator: building cases never touches the global one."""
    return torch.Generator().manual_seed(seed)


@dataclass
class Case:
    """One call ``fn(*args)``, compared ``exact``ly (bit for bit) or within tolerance.
    A case with a ``note`` is a remark, not a test: once every other case passes, the
    note is shown if ``fn`` fails this one."""

    label: str  # "hand-made: …", "random: …" or "degenerate: …"
    args: tuple
    exact: bool = False
    note: str | None = None


@dataclass
class Exercise:
    """A reference function, its cases and its common mistakes, pairs (wrong function,
    hint); ``check(fn)`` grades ``fn`` on the cases."""

    task: str  # "title: what the student writes"; the check's docstring
    reference: Callable[..., Any]  # the library's wherever it has one
    cases: Callable[[], list[tuple | Case]]  # built when checking; a row (label, *args)
    mistakes: list[tuple[Callable[..., Any], str]]  # (wrong function, its hint)
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
        expected, _ = self.answer(self.reference, case)  # outside the try: it may raise
        try:
            got, args = self.answer(fn, case)
        except NotImplementedError:
            return (
                "is not written yet (it raised NotImplementedError) on",
                [],
                SKELETON_HINT,
            )
        except Exception as err:  # the student's bug: report it, never crash
            error = f"error:     {type(err).__name__}: {err}{_student_line(err)}"
            hint = self.explain(case, expected, err) or _error_hint(str(err))
            return "raised an error on", [error], hint
        if not self.in_place and (changed := _changed(args, case.args)):
            return "changed its input in place on", [changed], IN_PLACE
        if problem := self.differs(got, expected, case.exact):
            lines = [f"expected:  {show(expected)}", f"got:       {show(got)}"]
            lines.append(f"problem:   {problem}")
            hint = self.explain(case, expected, got)
            return "does not match the library on", lines, hint
        return None

    def explain(self, case: Case, expected: Any, got: Any) -> str | None:
        """The hint of the first known mistake that fails ``case`` as ``fn`` did: with
        the same wrong answer, or the same error if ``got`` is an exception."""
        for wrong, hint in self.mistakes:
            try:
                mine, _ = self.answer(wrong, case)
            except Exception as err:  # a mistake may raise as the student's code did
                mine = err
            if isinstance(got, Exception) or isinstance(mine, Exception):
                if repr(mine) == repr(got):
                    return hint
            elif self.differs(mine, expected, case.exact):
                if not self.differs(got, mine, exact=False):
                    return hint
        return None

    def differs(self, got: Any, expected: Any, exact: bool) -> str | None:
        """None if ``got`` is acceptable; else torch.testing's report, with advice."""
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


def show(x: Any, limit: int = 400) -> str:
    """A short rendering of a value, with shape and dtype for arrays."""
    if _numbers(x):
        text = f"{_values(x)} ({len(x)} values)"
    elif isinstance(x, list) and x and callable(x[0]):
        text = f"[{len(x)} functions, each {show(x[0])}]"
    elif isinstance(x, (list, tuple)):
        text = f"[{', '.join(show(item, 160) for item in x)}]"
    elif isinstance(x, (Tensor, np.ndarray)):
        kind = "torch.Tensor" if isinstance(x, Tensor) else "numpy array"
        floats = isinstance(x, Tensor) and x.is_floating_point()
        values = _values(x.detach().float() if floats else x)
        text = f"{values} ({kind}, shape {tuple(x.shape)}, {x.dtype})"
    elif callable(x):
        text = x.__doc__ or getattr(x, "__name__", "a function")
    else:
        text = f"{x:.6g}" if isinstance(x, float) else repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _numbers(x: Any) -> bool:
    """Whether ``x`` is a non-empty list of plain numbers."""
    return (
        isinstance(x, list) and bool(x) and all(isinstance(v, (int, float)) for v in x)
    )


def _values(x: Any) -> str:
    """The values of an array on one line, 4 digits, the middle elided."""
    options = dict(precision=4, suppress_small=True, threshold=24, edgeitems=3)
    return " ".join(np.array2string(np.asarray(x), separator=", ", **options).split())


def _changed(args: tuple, before: tuple) -> str | None:
    """'argument N became …' for the first array or list of numbers ``fn`` changed."""
    for i, (arg, old) in enumerate(zip(args, before, strict=True)):
        if isinstance(arg, (Tensor, np.ndarray)):
            changed = not torch.equal(torch.as_tensor(arg), torch.as_tensor(old))
        else:
            changed = _numbers(old) and arg != old
        if changed:
            return f"argument {i + 1} became {show(arg)}"
    return None


def _student_line(err: BaseException) -> str:
    """' (line N in your_fn: <code>)': the innermost frame outside the libraries."""
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if not frame.filename.startswith(LIBRARIES):
            code = f": {frame.line}" if frame.line else ""
            return f" (line {frame.lineno} in {frame.name}{code})"
    return ""


def _error_hint(error: str) -> str | None:
    """A general hint for an error that no known mistake explains."""
    if "leaf Variable" in error or "a view of a leaf" in error:
        return "change parameters in place only inside `with torch.no_grad():`."
    if any(w in error for w in ("must match the size", "size of tensor", "shape")):
        return "check the shapes: print(x.shape) for each tensor you combine."
    if "dtype" in error or "expected scalar type" in error:
        return "the dtypes differ: convert one tensor with x.to(y.dtype)."
    return None
