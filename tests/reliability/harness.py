"""The reliability corpus's shared checks (issue 13): run ``kmedssl`` as a user would, then assert one line,
no traceback, nothing deleted or replaced, and bounded memory.

``run_kmedssl`` starts the real command in a subprocess (optionally under an address-space limit, so a file
that makes kmedssl allocate gigabytes fails the test instead of the machine); ``invoke`` runs it in-process
with click's runner (fast, for cases that need no memory bound).
"""

import hashlib
import os
import pathlib
import resource
import subprocess
import sys

from click.testing import CliRunner

# Torch, Keras and NumPy reserve address space far beyond what they touch; 6 GiB leaves room for them and
# still stops an allocation of tens of gigabytes at once.
ADDRESS_SPACE_LIMIT = 6 * 2**30


def run_kmedssl(*args, cwd=None, address_space=None, timeout=600, env=None):
    """``kmedssl ARGS`` in a new process -> ``CompletedProcess`` (``stdout``, ``stderr`` as text)."""
    def limit():
        if address_space:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    environment = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "torch"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "kmedssl.cli", *map(str, args)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=limit)


def invoke(*args):
    """``kmedssl ARGS`` in this process (click's runner) -> ``(exit_code, output)``."""
    from kmedssl.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def assert_one_line_error(exit_code, output, *fragments, exit_codes=(1, 2)):
    """A user mistake: a non-zero exit, no traceback, and one ``Error:`` line holding every fragment."""
    assert exit_code in exit_codes, f"exit code {exit_code}:\n{output}"
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    for fragment in fragments:
        assert str(fragment) in errors[0], f"{fragment!r} not in {errors[0]!r}"
    return errors[0]


def assert_process_error(process, *fragments):
    """``assert_one_line_error`` for a ``run_kmedssl`` result (stdout and stderr together)."""
    return assert_one_line_error(process.returncode, process.stdout + process.stderr, *fragments)


def snapshot(folder):
    """``{relative path: sha256}`` of every file under ``folder`` (symlinks not followed)."""
    folder = pathlib.Path(folder)
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file() and not path.is_symlink()}


def assert_unchanged(folder, before):
    """Every file recorded by ``snapshot`` is still there with the same bytes."""
    after = snapshot(folder)
    lost = sorted(set(before) - set(after))
    changed = sorted(key for key in before if key in after and after[key] != before[key])
    assert not lost and not changed, f"lost: {lost}; changed: {changed}"
