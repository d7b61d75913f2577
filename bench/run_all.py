"""Run every benchmark that needs no running stack (results in bench/results/*.json)."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for cmd in (["bench_segmentation.py", "--protocol", "EMBEDDED"], ["bench_buildings.py"]):
    print(f"== {' '.join(cmd)}", flush=True)
    subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:]], check=True)
