"""Bytecode cache for modules imported from zip files (Ansible's module payloads), in the test
images only: each task's payload is a new zip, so Python would compile the same module_utils
again for every task. Compiled code is kept by a digest of the interpreter's magic number, the
path inside the zip and the source; a process that cannot write the cache compiles as before."""

import zipimport

_compile = getattr(zipimport, "_compile_source", None)
_DIR = "/var/cache/wsgistack-pyc/"


def _compile_cached(pathname, source):
    import hashlib
    import marshal
    import os
    from importlib._bootstrap_external import MAGIC_NUMBER

    inner = pathname.rpartition(".zip" + os.sep)[2]
    key = hashlib.sha256(MAGIC_NUMBER + inner.encode() + b"\0" + source).hexdigest()
    path = _DIR + key
    try:
        with open(path, "rb") as f:
            return marshal.load(f)
    except (OSError, EOFError, ValueError, TypeError):
        pass
    code = _compile(pathname, source)
    try:
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "wb") as f:
            marshal.dump(code, f)
        os.replace(tmp, path)
    except OSError:
        pass
    return code


if _compile is not None:
    zipimport._compile_source = _compile_cached
