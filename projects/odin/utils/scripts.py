"""Import a command-line script (``tools/``, ``demo/``) as a module."""
import importlib.util
import os
import os.path as osp
from types import ModuleType
from typing import Optional


def load_script(path: str, root: Optional[str] = None) -> ModuleType:
    """Load a script (not a package module) so that its ``main(argv)`` can run in-process.

    Args:
        path: the script, absolute or relative to ``root`` (e.g. ``'tools/test.py'``).
        root: folder that relative paths start from (the caller knows where the scripts are:
            the tools and tests pass the checkout). Defaults to the working directory.

    Returns:
        The executed module (named after the path, e.g. ``tools_test``).

    Raises:
        FileNotFoundError: no such script.
    """
    root = root or os.getcwd()
    full = path if osp.isabs(path) else osp.join(root, path)
    if not osp.isfile(full):
        raise FileNotFoundError(f'script not found: {full}')
    name = osp.relpath(full, root).replace(osp.sep, '_').rsplit('.', 1)[0]
    spec = importlib.util.spec_from_file_location(name, full)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
