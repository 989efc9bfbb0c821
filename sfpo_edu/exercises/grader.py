"""The grader: ``check(fn)`` runs ``fn`` on an exercise's cases and, for the first one
it fails, prints the input, the expected and the returned value, what differs and the
hint of the first common mistake that answers (or raises) the same way. It never raises
and returns None, so a notebook cell shows only the feedback; ``grade`` returns a bool."""

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

TODO = "replace `raise NotImplementedError(...)` with your code."
IN_PLACE = "build a new tensor (x = x - m), not x -= m: the caller still needs x."
ERROR_HINTS = {  # words in an error that no known mistake explains → a general hint
    "leaf Variable": "change parameters in place only inside `with torch.no_grad():`.",
    "size": "check the shapes: print(x.shape) for each tensor you combine.",
    "shape": "check the shapes: print(x.shape) for each tensor you combine.",
    "dtype": "the dtypes differ: convert one tensor with x.to(y.dtype).",
}
LIBRARIES = (torch.__path__[0], np.__path__[0], sfpo_edu.__path__[0])  # not the student


def gen(seed: int) -> torch.Generator:
    """A private random generator: building cases never touches the global one."""
    return torch.Generator().manual_seed(seed)


@dataclass
class Exercise:
    """A reference function, its cases (rows ``(label, *args)``, built when checking,
    exact if the label says "bit for bit") and its common mistakes, hint → function."""

    task: str  # "title: what the student writes"; the check's docstring
    reference: Callable[..., Any]  # the library's wherever it has one
    cases: Callable[[], list[tuple]]
    mistakes: dict[str, Callable[..., Any]]  # hint → the wrong function it explains
    names: tuple[str, ...] = ()  # of the parts of a tuple answer, for messages
    in_place: bool = False  # fn changes its first argument, which is the answer
    note: str | None = None  # the last case is a remark: shown if only it fails
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
            cases = self.cases()
            tests = cases[:-1] if self.note else cases
            for i, case in enumerate(tests, start=1):
                if failure := self.failure(fn, case):
                    what, *lines = failure
                    name = getattr(fn, "__name__", "your function")
                    head = f"✗ {self.title}: {name} {what} case {i}/{len(tests)}"
                    print(f"{head} ({case[0]}).", *lines, sep="\n  ")
                    return False
            kinds = ", ".join(sorted({case[0].split(":")[0] for case in tests}))
            print(f"✓ {self.title}: all {len(tests)} cases pass ({kinds}).")
            if self.note and self.failure(fn, cases[-1]):
                print(f"  note:      {self.note}")
        return True

    def run(self, fn: Callable[..., Any], case: tuple) -> tuple[Any, tuple]:
        """fn's answer (or error) on a fresh copy of the case's arguments, and those."""
        args = copy.deepcopy(case[1:])
        try:
            got = fn(*args)
        except Exception as err:  # the student's bug: report it, never crash
            return err, args
        return (args[0] if self.in_place else got), args

    def failure(self, fn: Callable, case: tuple) -> list[str] | None:
        """None if ``fn`` passes ``case``; else what happened, then lines showing it."""
        (expected, _), (got, args) = self.run(self.reference, case), self.run(fn, case)
        shown = "\n             ".join(show(arg, 200) for arg in case[1:])
        lines, hint = [f"input:     {shown}"], None
        if isinstance(got, NotImplementedError):
            what, hint = "is not written yet (it raised NotImplementedError) on", TODO
        elif isinstance(got, Exception):
            what = "raised an error on"
            lines.append(f"error:     {type(got).__name__}: {got}{_student_line(got)}")
            general = (h for words, h in ERROR_HINTS.items() if words in str(got))
            hint = self.explain(case, expected, got) or next(general, None)
        elif not self.in_place and (changed := _changed(args, case[1:])):
            what, hint = "changed its input in place on", IN_PLACE
            lines.append(changed)
        elif problem := self.differs(got, expected, "bit for bit" in case[0]):
            what = "does not match the library on"
            hint = self.explain(case, expected, got)
            lines += [f"expected:  {show(expected)}", f"got:       {show(got)}"]
            lines.append(f"problem:   {problem}")
        else:
            return None
        return [what, *lines, *([f"hint:      {hint}"] if hint else [])]

    def explain(self, case: tuple, expected: Any, got: Any) -> str | None:
        """The hint of the first mistake that fails ``case`` as ``got`` did (same answer
        or same error)."""
        for hint, wrong in self.mistakes.items():
            mine, _ = self.run(wrong, case)
            if isinstance(got, Exception) or isinstance(mine, Exception):
                if repr(mine) == repr(got):
                    return hint
            elif self.differs(mine, expected, "bit for bit" in case[0]):
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
    if isinstance(x, (list, tuple)):
        text = f"[{', '.join(show(item, 160) for item in x)}]"
    elif isinstance(x, (Tensor, np.ndarray)):
        kind = "torch.Tensor" if isinstance(x, Tensor) else "numpy array"
        floats = isinstance(x, Tensor) and x.is_floating_point()
        options = dict(precision=4, suppress_small=True, threshold=24, edgeitems=3)
        values = np.asarray(x.detach().float() if floats else x)
        values = " ".join(np.array2string(values, separator=", ", **options).split())
        text = f"{values} ({kind}, shape {tuple(x.shape)}, {x.dtype})"
    elif callable(x):
        text = x.__doc__ or getattr(x, "__name__", "a function")
    else:
        text = f"{x:.6g}" if isinstance(x, float) else repr(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _changed(args: tuple, before: tuple) -> str | None:
    """'argument N became …' for the first array argument ``fn`` changed in place."""
    for i, (arg, old) in enumerate(zip(args, before, strict=True)):
        arrays = isinstance(arg, (Tensor, np.ndarray))
        if arrays and not torch.equal(torch.as_tensor(arg), torch.as_tensor(old)):
            return f"argument {i + 1} became {show(arg)}"
    return None


def _student_line(err: BaseException) -> str:
    """' (line N in your_fn: <code>)': the innermost frame outside the libraries."""
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if not frame.filename.startswith(LIBRARIES):
            code = f": {frame.line}" if frame.line else ""
            return f" (line {frame.lineno} in {frame.name}{code})"
    return ""
