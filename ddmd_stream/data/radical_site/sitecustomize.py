"""Start-up hook of RADICAL's processes in a ddmd_stream run (PYTHONPATH: workflow/resources.py).

In a process started as `radical-pilot-*` (bridges, components, agents) it installs
ddmd_stream.workflow.radical_patches for it; every process then runs the next `sitecustomize` on
sys.path, if there is one, as Python would have without this folder.
"""

import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _install_patches() -> None:
    program = os.path.basename(sys.argv[0] if sys.argv else "")
    if not program.startswith("radical-pilot-"):
        return
    try:
        from ddmd_stream.workflow import radical_patches
    except ImportError:  # ddmd_stream not importable here: RADICAL runs unpatched
        return
    radical_patches.install_for(program)


def _run_next_sitecustomize() -> None:
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules[__name__] = module
    spec.loader.exec_module(module)


_install_patches()
_run_next_sitecustomize()
