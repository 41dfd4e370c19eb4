"""``spike-server --ops TARGET``: find the student's :class:`~spike.ops.OpRegistry`.

Like ``uvicorn main:app``, ``TARGET`` is ``MODULE:NAME`` (``my_service:ops``,
imported with the current directory on the path) or ``FILE.py:NAME``
(``path/to/my_service.py:ops``). Every mistake is one
:class:`~spike.errors.OpsLoadError` whose message says what was tried and
what to do; its ``__cause__`` is the original exception, for
``--tracebacks``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType

from .errors import OpsLoadError
from .ops import OpRegistry, describe

__all__ = ["load_ops"]

_FORM = "use MODULE:NAME or FILE.py:NAME, for example my_service.py:ops"


def load_ops(target: str) -> OpRegistry:
    """The registry ``target`` names; :class:`OpsLoadError` if it cannot be had."""
    # rpartition: a Windows path has a colon of its own (C:\work\svc.py:ops).
    where, colon, name = target.rpartition(":")
    if not colon or not where or not name:
        raise OpsLoadError(f"--ops {target!r}: {_FORM}")
    if not name.isidentifier():
        raise OpsLoadError(f"--ops {target!r}: {name!r} is not a Python name; {_FORM}")
    if where.endswith(".py") or os.sep in where or "/" in where:
        module, label = _import_file(Path(where)), where
    else:
        module, label = _import_module(where), f"module {where}"
    try:
        found = getattr(module, name)
    except AttributeError:
        registries = [key for key, value in vars(module).items() if isinstance(value, OpRegistry)]
        hint = f"it has {', '.join(registries)}" if registries else "it defines no OpRegistry"
        raise OpsLoadError(
            f"--ops {target!r}: {label} has no name {name!r} ({hint}); create one with "
            "ops = default_ops.copy()"
        ) from None
    if not isinstance(found, OpRegistry):
        raise OpsLoadError(
            f"--ops {target!r}: {name} is a {type(found).__name__}, not an OpRegistry; "
            "create one with ops = default_ops.copy() and register your ops on it"
        )
    return found


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise OpsLoadError(
            f"--ops: there is no file {str(path)!r} (looked in {Path.cwd()}); run "
            "spike-server from the folder that holds it, or give its path"
        )
    resolved = path.resolve()
    # Its own folder comes first, so the file can import its neighbours.
    folder = str(resolved.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module_name = resolved.stem
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise OpsLoadError(f"--ops: {str(path)!r} cannot be imported as Python ({_FORM})")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # as an import would: dataclasses and pickle need it
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        raise _failed(str(path), exc) from exc
    return module


def _import_module(name: str) -> ModuleType:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)  # like `python -m`: the current directory is importable
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(f"{exc.name}.")):
            raise OpsLoadError(
                f"--ops: no module named {name!r} in {cwd} or on Python's path; run "
                "spike-server from the folder that holds it, or give the file's path "
                f"({name.replace('.', '/')}.py:NAME)"
            ) from exc
        raise _failed(f"module {name}", exc) from exc
    except BaseException as exc:
        raise _failed(f"module {name}", exc) from exc


def _failed(label: str, exc: BaseException) -> OpsLoadError:
    """Importing the student's code raised: say what and where, in one line."""
    if isinstance(exc, SyntaxError):
        return OpsLoadError(
            f"--ops: {label} has a syntax error at {Path(exc.filename or label).name}, "
            f"line {exc.lineno}: {exc.msg}"
        )
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        where = f" ({Path(last.filename).name}, line {last.lineno})"
    return OpsLoadError(
        f"--ops: importing {label} failed{where}: {describe(exc)}; fix it, or run with "
        "--tracebacks to see the whole traceback"
    )
