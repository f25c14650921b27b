"""Survey MetaWorld's scripted experts: attempts and time to collect N demos per task.

For each task (default: all fifty of MT50) this runs ``collect_expert_demos`` exactly as
the recipe does (``demos.num`` successes, 200-step cap, the demo seed stream of ``--seed``,
state only unless ``--pixels``) and reports how many attempts the expert needed, its
success rate, the demo lengths and the wall time. A task whose expert cannot give
``--num`` successes within ``--max-tries`` attempts (the recipe's default cap is
``10 * num + 10``) is reported as refused, with the successes it had.

    python scripts/demo_survey.py                         # MT50, 10 demos, seed 1
    python scripts/demo_survey.py --tasks mt10 --num 100  # SFT-100's demos
    python scripts/demo_survey.py --tasks peg-insert-side-v3 hand-insert-v3 --json out.json

Prints a Markdown table (and writes JSON with ``--json``). Single process: run it when the
machine is otherwise quiet if the times matter.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from torchrl_chunk.envs.demos import ExpertDemoError, collect_expert_demos
from torchrl_chunk.envs.metaworld.tasks import resolve_task_list


def survey_task(task: str, num: int, seed: int, max_tries: int, max_steps: int, pixels: bool) -> dict:
    """Collect ``num`` demos of ``task``; a dict of attempts, lengths and wall time (or the refusal)."""
    start = time.perf_counter()
    try:
        demos = collect_expert_demos(task, num, seed, max_steps=max_steps, max_tries=max_tries, from_pixels=pixels)
    except ExpertDemoError as err:
        return {"task": task, "ok": False, "demos": err.successes, "attempts": err.tries,
                "wall_s": time.perf_counter() - start, "error": str(err)}
    wall = time.perf_counter() - start
    lengths = demos.lengths
    return {"task": task, "ok": True, "demos": len(demos), "attempts": demos.num_tries,
            "success_rate": demos.success_rate, "len_min": min(lengths), "len_median": statistics.median(lengths),
            "len_max": max(lengths), "wall_s": wall}


def to_markdown(rows: list[dict], num: int, max_tries: int) -> str:
    lines = ["| task | demos | attempts | failed | success rate | length min / median / max | wall (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["ok"]:
            lines.append(f"| {r['task']} | {r['demos']} | {r['attempts']} | {r['attempts'] - r['demos']} | "
                         f"{r['success_rate']:.2f} | {r['len_min']} / {r['len_median']:g} / {r['len_max']} | "
                         f"{r['wall_s']:.1f} |")
        else:
            lines.append(f"| {r['task']} | **refused**: {r['demos']} of {num} | {r['attempts']} (cap {max_tries}) | "
                         f"{r['attempts'] - r['demos']} | {r['demos'] / max(r['attempts'], 1):.2f} | – | "
                         f"{r['wall_s']:.1f} |")
    ok = [r for r in rows if r["ok"]]
    total = sum(r["wall_s"] for r in rows)
    lines += ["", f"{len(ok)} of {len(rows)} tasks gave {num} demos; refused: "
              f"{', '.join(r['task'] for r in rows if not r['ok']) or 'none'}. Total wall time {total:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["mt50"], help="mt10, mt50 or task names (default mt50)")
    parser.add_argument("--num", type=int, default=10, help="demos per task (default 10, the paper's)")
    parser.add_argument("--seed", type=int, default=1, help="demo seed (the recipe's default seed is 1)")
    parser.add_argument("--max-tries", type=int, default=None, help="attempt cap (default 10 * num + 10, the recipe's)")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--pixels", action="store_true", help="also render 128 px frames (needs GL)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    try:
        tasks = resolve_task_list(args.tasks[0] if len(args.tasks) == 1 else args.tasks)  # a preset or names
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    max_tries = 10 * args.num + 10 if args.max_tries is None else args.max_tries
    rows = []
    for task in tasks:
        row = survey_task(task, args.num, args.seed, max_tries, args.max_steps, args.pixels)
        rows.append(row)
        state = "ok" if row["ok"] else "REFUSED"
        print(f"{task:30s} {state:7s} {row['demos']:3d} demos in {row['attempts']:4d} attempts, "
              f"{row['wall_s']:6.1f} s", file=sys.stderr, flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"num": args.num, "seed": args.seed, "max_tries": max_tries, "rows": rows}, f, indent=1)
    print(to_markdown(rows, args.num, max_tries))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
