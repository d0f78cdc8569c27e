"""
The build's one addition to pyproject.toml: on CPython, the request path's
hot modules (:data:`tproxy.compiled.MODULES`) compiled by Cython from their
``.py`` source and the ``.pxd`` beside it.  When compiling fails the install
goes on: the manifest it writes (``tproxy/_compiled.json``) says why, and
tproxy warns once at import and runs the pure-Python modules.  PyPy compiles
nothing.
"""

import importlib.util
import json
import os
import platform
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _compiled_module():
    """tproxy/compiled.py, read without importing tproxy."""
    spec = importlib.util.spec_from_file_location(
        "_tproxy_compiled", os.path.join(HERE, "tproxy", "compiled.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildHotModules(build_ext):
    """Cythonize and compile; a failure is reported, not raised."""

    def finalize_options(self):
        build_ext.finalize_options(self)
        if self.parallel is None:
            self.parallel = True   # (one compiler per CPU)

    def run(self):
        compiled = _compiled_module()
        # (where the modules go: the source tree for an editable install;
        # asked first, as setuptools' run changes it while it builds)
        self.manifest = os.path.join(
            os.path.dirname(self.get_ext_fullpath("tproxy.compiled")), compiled.MANIFEST)
        try:
            from Cython.Build import cythonize

            c_sources = {ext.name: ext.sources for ext in cythonize(
                self.extensions, build_dir=os.path.join(self.build_temp, "cython"),
                quiet=True, compiler_directives={
                    "language_level": 3,
                    # None where an object is typed raises AttributeError,
                    # as in Python, instead of crashing
                    "nonecheck": True})}
            for ext in self.extensions:   # (setuptools' objects, prepared)
                ext.sources = c_sources[ext.name]
            build_ext.run(self)
        except Exception as e:    # Cython missing, a Cython or C compiler error ...
            why = "{}: {}".format(type(e).__name__, e).strip()
            sys.stderr.write("WARNING: tproxy: compiling the hot modules failed ({}); "
                             "the pure-Python modules will be used\n".format(why))
            self._manifest({"failed": why})
        else:
            self._manifest({"modules": {name: compiled.source_digest(name, HERE)
                                        for name in compiled.MODULES}})

    def _manifest(self, content):
        os.makedirs(os.path.dirname(self.manifest), exist_ok=True)
        with open(self.manifest, "w") as f:
            json.dump(content, f, indent=1, sort_keys=True)


if platform.python_implementation() == "CPython":
    setup(ext_modules=[Extension(name, [os.path.join(*name.split(".")) + ".py"])
                       for name in _compiled_module().MODULES],
          cmdclass={"build_ext": BuildHotModules})
else:
    setup()
