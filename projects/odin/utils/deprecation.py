"""Deprecated import paths that keep working: a module or name that moved, with one warning.

An alias module at the old path calls :func:`alias_module`: the old name then refers to the new
module object itself (``sys.modules``), so classes, registries and monkeypatches are shared and
nothing is imported twice; a package's already imported submodules are aliased too. A package
that lost some names serves them through :func:`deprecated_attribute` from its module-level
``__getattr__``. Each old path or name warns once per process (``DeprecationWarning``, attributed
to the code that imported it).
"""
import importlib
import sys
import warnings
from types import ModuleType
from typing import Set

_WARNED: Set[str] = set()


def _caller_stacklevel(skip: int = 0) -> int:
    """The ``stacklevel`` that attributes a warning to the code that used the old path.

    That is the first frame outside this module, the alias modules and ``skip`` more frames (a
    package's ``__getattr__``), not counting the import machinery's frames, which
    ``warnings.warn`` skips itself.
    """
    frame, level = sys._getframe(2), 2  # level 1: warn_moved, which calls warnings.warn
    while frame is not None:
        internal = frame.f_code.co_filename.startswith('<frozen importlib')
        ours = (frame.f_globals.get('__name__') == __name__
                or frame.f_globals.get('__deprecated_alias__'))
        if not internal and not ours:
            if skip == 0:
                return level
            skip -= 1
        frame, level = frame.f_back, level + (0 if internal else 1)
    return 1


def warn_moved(old: str, new: str, skip: int = 0) -> None:
    """Warn once per process that ``old`` moved to ``new``.

    Args:
        old: the deprecated dotted path.
        new: what to use instead.
        skip: frames between the caller of this module's functions and the user's code (1 for a
            module-level ``__getattr__``). Defaults to 0.
    """
    if old in _WARNED:
        return
    _WARNED.add(old)
    warnings.warn(f'{old} is deprecated and will be removed: use {new}', DeprecationWarning,
                  stacklevel=_caller_stacklevel(skip))


def alias_module(old: str, new: str) -> ModuleType:
    """Make the module ``old`` (being imported) the module ``new``, warning once.

    Args:
        old: the deprecated dotted module path (the caller's ``__name__``).
        new: the dotted path of the module it became.

    Returns:
        The new module (also ``sys.modules[old]``, so the import returns it).
    """
    module = importlib.import_module(new)
    warn_moved(old, new)
    sys.modules[old] = module
    prefix = new + '.'
    for name, sub in list(sys.modules.items()):
        if name.startswith(prefix):
            sys.modules.setdefault(old + name[len(new):], sub)
    return module


def deprecated_attribute(package: str, name: str, new_module: str) -> object:
    """The attribute ``name`` that moved from ``package`` to ``new_module``, warning once.

    Called from ``package``'s module-level ``__getattr__``.

    Raises:
        AttributeError: ``new_module`` has no such attribute.
    """
    value = getattr(importlib.import_module(new_module), name)
    warn_moved(f'{package}.{name}', f'{new_module}.{name}', skip=1)
    return value


__all__ = ['alias_module', 'deprecated_attribute', 'warn_moved']
