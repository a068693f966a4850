"""The command line run inside the test process, as a child would run it: what a child would not
share with its parent is set up for the call and put back afterwards.

A child starts with its own environment, working directory, sys.path and signal handlers; its
stdout and stderr are pipes that every writer reaches (print, warnings, the logging handlers that
libraries such as transformers bind to stderr when first used); and it shows warnings under the
interpreter's default filters, not pytest's. Starting one costs a Python start and the import of
torch, transformers and TRL (9 s for the GRPO trainer on this project's 2-core reference machine);
in-process, those imports are paid once per test worker."""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import io
import logging
import os
import signal
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEPT_MODULES = (Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), ROOT)


def _import_tqdm_as_a_child_would() -> None:
    """A child whose stderr is a pipe imports tqdm under TQDM_DISABLE (esc_agents.core.progress), so
    the libraries' bars stay off; tqdm reads it once, at import. Here it is imported so, before any
    library does; this process's environment, and so its children's, stays as it was."""
    if "tqdm" in sys.modules:
        raise RuntimeError("tqdm was imported before tests.in_process; its bars would reach the calls' stderr")
    saved = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        importlib.import_module("tqdm")
    finally:
        if saved is None:
            del os.environ["TQDM_DISABLE"]
        else:
            os.environ["TQDM_DISABLE"] = saved


_import_tqdm_as_a_child_would()


def run_in_process(args: list[str], environment: dict, cwd, timeout: float) -> subprocess.CompletedProcess:
    """`rlff-esc ARGS` with `environment` and `cwd`; its exit code, stdout and stderr. A call that
    outlives `timeout` ends the worker with every thread's traceback, as a hung child fails its test."""
    from esc_agents.cli.main import main

    saved_environ, saved_cwd, saved_path = dict(os.environ), os.getcwd(), list(sys.path)
    saved_signals = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    saved_modules = set(sys.modules)
    outer = sys.stdout, sys.stderr
    out, err = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(environment)
    importlib.invalidate_caches()  # files a test has just written are seen
    faulthandler.dump_traceback_later(timeout, exit=True)
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _handlers_to(outer, out, err), \
                _interpreter_warnings():
            try:
                code = main(args)
            except SystemExit as exc:  # argparse's usage errors, --help, --version
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if not isinstance(exc.code, (int, type(None))):
                    print(exc.code, file=sys.stderr)
            except BaseException:  # what the interpreter prints before it exits 1
                traceback.print_exc()
                code = 1
    finally:
        faulthandler.cancel_dump_traceback_later()
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_environ)
        sys.path[:] = saved_path
        for number, handler in saved_signals.items():
            signal.signal(number, handler)
        _forget_modules_of_the_call(saved_modules)
    return subprocess.CompletedProcess(["rlff-esc", *args], code, out.getvalue(), err.getvalue())


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    return [handler for logger in loggers for handler in logger.handlers
            if isinstance(handler, logging.StreamHandler)  # a file's stays; logging's last resort follows sys.stderr
            and not isinstance(handler, (logging.FileHandler, logging._StderrHandler))
            and not type(handler).__module__.startswith("_pytest")]  # pytest's own capture, not the child's


@contextlib.contextmanager
def _handlers_to(outer: tuple, out: io.StringIO, err: io.StringIO):
    """In a child every stream handler writes to its stdout or stderr: during the call, those of
    this process write to the call's (stdout's to its stdout, the rest to its stderr); afterwards
    each gets its stream back, and one the call created, bound to the call's, the worker's."""
    moved = [(handler, handler.stream) for handler in _stream_handlers()]
    for handler, stream in moved:
        handler.setStream(out if stream is outer[0] or stream is sys.__stdout__ else err)
    try:
        yield
    finally:
        for handler in _stream_handlers():
            if handler.stream is out or handler.stream is err:
                handler.setStream(outer[0] if handler.stream is out else outer[1])
        for handler, stream in moved:
            handler.setStream(stream)


@contextlib.contextmanager
def _interpreter_warnings():
    """Warnings printed to stderr under CPython's default filters, as a child shows them (pytest
    would otherwise record them and keep them out of the call's stderr)."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category, append=True)
        warnings.showwarning = warnings._showwarning_orig
        warnings._showwarnmsg_impl = _print_warning  # pytest's recorder is put back when the block ends
        yield


def _print_warning(message) -> None:
    """What CPython does with a warning no filter ignores: one formatted line or two on stderr."""
    try:
        sys.stderr.write(warnings._formatwarnmsg(message))
    except OSError:
        pass


def _forget_modules_of_the_call(before: set[str]) -> None:
    """Modules the call imported from outside the installed packages and this checkout (a user's
    plugin file in a test's folder, which the next test may write again under the same name)."""
    for name in set(sys.modules) - before:
        origin = getattr(sys.modules[name], "__file__", None)
        if origin and not any(Path(origin).resolve().is_relative_to(root) for root in KEPT_MODULES):
            del sys.modules[name]
