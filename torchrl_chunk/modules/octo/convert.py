"""Command line: convert an official Octo checkpoint, or encode instructions with T5.

::

    # official directory -> one torch file (backbone; add --keep-t5 for the T5 weights)
    python -m torchrl_chunk.modules.octo.convert checkpoint ~/octo-small-1.5 octo_small_1_5.pt

    # instruction strings -> [num_tasks, 16, 768] T5 table, in MT10 task_id order
    python -m torchrl_chunk.modules.octo.convert instructions ~/t5-base mt10_t5.pt

Both run offline; see docs/octo.md for downloading the inputs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def convert_checkpoint(src: str, dst: str, keep_t5: bool = False, step: int | None = None) -> None:
    from torchrl_chunk.modules.octo.checkpoint import load_octo_checkpoint, save_torch_checkpoint

    ckpt = load_octo_checkpoint(src, step=step)
    print(f"Octo {ckpt.config.version} checkpoint, step {ckpt.step}\n{ckpt.report}")
    save_torch_checkpoint(
        dst,
        ckpt.transformer,
        t5_state_dict=ckpt.t5_state_dict if keep_t5 else None,
        dataset_statistics=ckpt.dataset_statistics,
    )
    print(f"wrote {dst} ({Path(dst).stat().st_size / 2**20:.1f} MiB)")


def encode_instructions(t5_dir: str, dst: str, instructions: list[str] | None = None) -> None:
    from torchrl_chunk.modules.octo.language import InstructionEmbeddings, T5LanguageEncoder

    if instructions is None:
        from torchrl_chunk.envs import MT10_TASKS, TASK_INSTRUCTIONS

        instructions = [TASK_INSTRUCTIONS[t] for t in MT10_TASKS]
    table = InstructionEmbeddings.from_instructions(instructions, T5LanguageEncoder.from_pretrained(t5_dir))
    torch.save({"instructions": instructions, "embeddings": table.embeddings, "mask": table.mask}, dst)
    print(f"wrote {dst}: {tuple(table.embeddings.shape)} for {len(instructions)} instructions")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m torchrl_chunk.modules.octo.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("checkpoint", help="official checkpoint directory -> torch file")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("--keep-t5", action="store_true", help="also store the T5 encoder weights")
    c.add_argument("--step", type=int, default=None)
    i = sub.add_parser("instructions", help="encode instructions with a local t5-base")
    i.add_argument("t5_dir")
    i.add_argument("dst")
    i.add_argument("--text", nargs="*", default=None, help="instructions (default: MT10, task_id order)")
    args = p.parse_args(argv)
    if args.cmd == "checkpoint":
        convert_checkpoint(args.src, args.dst, args.keep_t5, args.step)
    else:
        encode_instructions(args.t5_dir, args.dst, args.text)


if __name__ == "__main__":
    main()
