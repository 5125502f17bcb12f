"""How long `medcap train CONCEPTS|CAPTIONS --config paper` takes to fail without network.

    PYTHONPATH=src .venv/bin/python bench/offline_start.py --data synth-data [--json out.json]

Run it on a machine WITHOUT network (every command must fail for want of weights). Each
variant runs in its own process, side by side, with an empty Hugging Face cache:

- ``probe``: HF_HUB_OFFLINE unset; medcap's one connection probe finds the hub unreachable
  and the download runs in the hub's offline mode (what a user gets);
- ``hf_hub_offline``: HF_HUB_OFFLINE=1 (no probe at all);
- ``no_probe``: HF_HUB_OFFLINE unset and the probe switched off (``hub_access`` a do-nothing block,
  ``offline`` always False, so the early weights check passes too): the hub client's own retry
  loop, as before the probe;
- ``imports``: ``import medcap.cli, timm, transformers`` alone: what any command pays before its
  first line of work, on this machine.

Reports each variant's wall time (the command's, including interpreter start), its exit code
and the last line of its stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

NO_PROBE = ("import contextlib, sys; "
            "import medcap.models.backbones as b, medcap.models.captioner as c, medcap.models.location as loc; "
            "b.hub_access = loc.hub_access = contextlib.nullcontext; "
            "b.offline = c.offline = lambda *args, **kwargs: False; "
            "from medcap.cli import main; sys.exit(main(sys.argv[1:]))")
CLI = "import sys; from medcap.cli import main; sys.exit(main(sys.argv[1:]))"
IMPORTS = "import medcap.cli, timm, transformers"


def run(code: str, args: list[str], env: dict) -> dict:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    seconds = time.monotonic() - start
    lines = [line for line in proc.stderr.replace("\r", "\n").splitlines() if line.strip()]
    return {"seconds": round(seconds, 2), "rc": proc.returncode, "last_line": lines[-1][:160] if lines else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="A dataset folder (e.g. `medcap synth synth-data`).")
    parser.add_argument("--tasks", nargs="+", default=["concepts", "captions"])
    parser.add_argument("--variants", nargs="+", default=["imports", "probe", "hf_hub_offline", "no_probe"])
    parser.add_argument("--json", help="Write the results here too.")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as home:
        base = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        base.update(HF_HOME=os.path.join(home, "hf"), TORCH_HOME=os.path.join(home, "torch"))
        for task in args.tasks:
            cmd = ["train", task, "--config", "paper", "--data", args.data, "--out", os.path.join(home, f"run-{task}")]
            for variant in args.variants:
                if variant == "imports":
                    if task != args.tasks[0]:
                        continue
                    row = run(IMPORTS, [], base)
                elif variant == "probe":
                    row = run(CLI, cmd, base)
                elif variant == "hf_hub_offline":
                    row = run(CLI, cmd, {**base, "HF_HUB_OFFLINE": "1"})
                else:
                    row = run(NO_PROBE, cmd, base)
                row.update(task=task if variant != "imports" else "-", variant=variant)
                results.append(row)
                print(f"{row['task']:9} {variant:15} {row['seconds']:7.2f} s  rc {row['rc']}  {row['last_line'][:90]}",
                      flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
