"""cnncodes imported before torch shortens OpenMP's spin (cnncodes/_openmp.py); a user's own
setting, and a torch already loaded, are left alone."""
import os
import subprocess
import sys

PROBE = "import os, sys\n{before}import cnncodes\nprint(os.environ.get('GOMP_SPINCOUNT', 'unset'))"


def spin_after_import(before="", **env):
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], env={**clean, **env},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_set_before_torch_loads():
    from cnncodes._openmp import SPIN_COUNT
    assert spin_after_import() == SPIN_COUNT


def test_users_value_and_wait_policy_kept():
    assert spin_after_import(GOMP_SPINCOUNT="123") == "123"
    assert spin_after_import(OMP_WAIT_POLICY="active") == "unset"


def test_not_set_once_torch_is_loaded():
    # libgomp read its setting when torch loaded it: a value set now would do nothing here and
    # would only reach child processes
    assert spin_after_import(before="import torch\n") == "unset"
