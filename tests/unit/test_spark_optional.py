"""`e5plugin.spark` is importable without pyspark (the `spark` extra): pyspark loads only when a Spark job runs."""

from __future__ import annotations

import subprocess
import sys


def test_the_spark_module_imports_without_loading_pyspark() -> None:
    code = "import sys, e5plugin.spark, e5plugin.cli; assert 'pyspark' not in sys.modules, 'pyspark imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
