"""scripts/gpu_check.py: a step that fails inside scripts/gpu_check_train.py is the same one FAIL line as any other."""
import os
import subprocess
import sys

from tests.conftest import REPO


def test_a_failed_training_step_is_one_fail_line_without_a_traceback(tmp_path):
    # No visible CUDA device and no CPU rehearsal: step_train's first check fails with CheckFailed, raised in
    # gpu_check_train.py and caught by gpu_check.py run as __main__ (one class, from scripts/gpu_common.py).
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "GPU_CHECK_WORK": str(tmp_path)}
    env.pop("GPU_CHECK_CPU", None)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "train"], capture_output=True,
                          text=True, timeout=120, env=env, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out, out
    assert out.strip().splitlines()[-1] == ("gpu_check: train: FAIL no CUDA device visible (GPU_CHECK_CPU=1 rehearses "
                                            "the check on the CPU)")
