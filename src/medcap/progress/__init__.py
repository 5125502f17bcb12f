"""Progress bars and library noise, one rule for the whole toolkit.

* A bar is shown on a terminal and nothing is written when stderr is not one (a log file, a
  pipe, a test): tqdm's ``disable=None``.
* With a time budget (``max_minutes``) the training bar counts the budget's seconds, so its
  ETA is when the budget ends the run, not when the epoch would.
* transformers' and the hub's load bars and warnings are off unless the user asks for them
  (``medcap --verbose``); an environment variable the user set wins.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from typing import Callable, Iterable

# Environment defaults that quieten transformers / huggingface_hub (read when they are imported).
QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",        # no "Some weights were not used ..." warnings
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",      # no download / "Loading weights" bars
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def on_terminal(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def bar(iterable: Iterable | None = None, *, show: bool = True, **kwargs):
    """A tqdm bar on a terminal (stderr), nothing elsewhere; ``show=False``: never."""
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    return tqdm(iterable, disable=None if show else True, **kwargs)


class BudgetBar:
    """Iterates ``iterable`` while a bar counts the seconds of a time budget (``elapsed()``: the
    seconds the run has used), so the bar's ETA is the budget's end."""

    def __init__(self, iterable: Iterable, budget_s: float, elapsed: Callable[[], float], *, show: bool = True,
                 desc: str = "", file=None):
        self.iterable, self.elapsed = iterable, elapsed
        self.bar = bar(total=max(1, round(budget_s)), initial=min(round(elapsed()), round(budget_s)), desc=desc,
                       unit="s", show=show, file=file,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of the time budget "
                                  "[{remaining} left{postfix}]")

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.bar.update(min(self.bar.total, self.elapsed()) - self.bar.n)

    def set_postfix(self, **kwargs) -> None:
        self.bar.set_postfix(**kwargs)

    def close(self) -> None:
        self.bar.close()


def training_bar(loader: Iterable, epoch: int, epochs: int, budget_s: float, elapsed: Callable[[], float],
                 show: bool = True):
    """The training loop's bar: one epoch's batches, or with a time budget the budget's seconds."""
    desc = f"epoch {epoch + 1}/{epochs}"
    if budget_s < float("inf"):
        return BudgetBar(loader, budget_s, elapsed, show=show, desc=desc)
    return bar(loader, desc=desc, show=show)


@contextlib.contextmanager
def quiet_libraries(verbose: bool = False):
    """Inside: transformers' and the hub's load bars and warnings off (``verbose``: left as they
    are). The settings are restored on the way out, so a caller in the same process (a test, a
    notebook) keeps its own."""
    if verbose:
        yield
        return
    added = {k: v for k, v in QUIET_ENV.items() if k not in os.environ}
    os.environ.update(added)
    hub, hf = _library_states()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(transformers|huggingface_hub)(\.|$)")
            _quiet_imported()
            yield
    finally:
        for key in added:
            os.environ.pop(key, None)
        _restore(hub, hf)


def _quiet_imported() -> None:
    """The libraries already imported read the environment then: tell them directly."""
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def _library_states():
    hub = hf = None
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import are_progress_bars_disabled

        hub = are_progress_bars_disabled()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf = (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
    return hub, hf


def _restore(hub, hf) -> None:
    """Put back what was set before (libraries imported inside keep their quiet settings)."""
    if hub is not None:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        (disable_progress_bars if hub else enable_progress_bars)()
    if hf is not None:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(hf[0])
        (hf_logging.enable_progress_bar if hf[1] else hf_logging.disable_progress_bar)()
