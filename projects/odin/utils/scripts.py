"""Import the repository's command-line scripts (``tools/``, ``demo/``) as modules."""
import importlib.util
import os.path as osp
from types import ModuleType

#: the repository root (``projects/odin/utils`` -> three levels up)
REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def load_script(path: str) -> ModuleType:
    """Load a script (not a package module) so that its ``main(argv)`` can run in-process.

    Args:
        path: the script, absolute or relative to the repository root (e.g.
            ``'tools/test.py'``).

    Returns:
        The executed module (named after the path, e.g. ``tools_test``).

    Raises:
        FileNotFoundError: no such script.
    """
    full = path if osp.isabs(path) else osp.join(REPO_ROOT, path)
    if not osp.isfile(full):
        raise FileNotFoundError(f'script not found: {full}')
    name = osp.relpath(full, REPO_ROOT).replace(osp.sep, '_').rsplit('.', 1)[0]
    spec = importlib.util.spec_from_file_location(name, full)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
