"""Command line: convert an official Octo checkpoint, or encode instructions with T5.

::

    # official directory -> one torch file (backbone; add --keep-t5 for the T5 weights)
    python -m torchrl_chunk.modules.octo.convert checkpoint ~/octo-small-1.5 octo_small_1_5.pt

    # instruction strings, in task_id order -> [num_tasks, 16, 768] T5 table
    python -m torchrl_chunk.modules.octo.convert instructions ~/t5-base table.pt \\
        --text "open the drawer" "close the drawer"
    python -m torchrl_chunk.modules.octo.convert instructions ~/t5-base table.pt \\
        --file instructions.txt            # one instruction a line; "-" reads stdin

The model knows no simulator: the instructions are always passed in (docs/octo.md shows
how to write the MT10 list from ``torchrl_chunk.envs``). Both run offline; see
docs/octo.md for downloading the inputs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch


def convert_checkpoint(src: str, dst: str, keep_t5: bool = False, step: int | None = None) -> None:
    from torchrl_chunk.modules.octo.checkpoint import load_octo_checkpoint
    from torchrl_chunk.modules.octo.torch_checkpoint import save_torch_checkpoint

    ckpt = load_octo_checkpoint(src, step=step)
    print(f"Octo {ckpt.config.version} checkpoint, step {ckpt.step}\n{ckpt.report}")
    save_torch_checkpoint(
        dst,
        ckpt.transformer,
        t5_state_dict=ckpt.t5_state_dict if keep_t5 else None,
        dataset_statistics=ckpt.dataset_statistics,
    )
    print(f"wrote {dst} ({Path(dst).stat().st_size / 2**20:.1f} MiB)")


def read_instructions(path: str) -> list[str]:
    """Instructions from a text file (or ``"-"``: stdin), one a line, blank lines skipped."""
    if path == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(path).expanduser().read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(
                f"cannot read the instruction file {path} ({err}); pass a UTF-8 text file "
                "with one instruction a line, in task_id order."
            ) from err
    return [line.strip() for line in text.splitlines() if line.strip()]


def encode_instructions(t5_dir: str, dst: str, instructions: Sequence[str]) -> None:
    """Encode ``instructions`` (ordered by task id) with the T5 in ``t5_dir``; save to ``dst``."""
    from torchrl_chunk.modules.octo.language import InstructionEmbeddings, T5LanguageEncoder

    instructions = list(instructions)
    if not instructions or not all(isinstance(t, str) and t.strip() for t in instructions):
        raise ValueError(
            f"instructions must be a non-empty list of non-empty strings in task_id order, got "
            f"{instructions!r}."
        )
    table = InstructionEmbeddings.from_instructions(instructions, T5LanguageEncoder.from_pretrained(t5_dir))
    torch.save({"instructions": instructions, "embeddings": table.embeddings, "mask": table.mask}, dst)
    print(f"wrote {dst}: {tuple(table.embeddings.shape)} for {len(instructions)} instructions")


def main(argv: list[str] | None = None) -> None:
    from torchrl_chunk.modules.octo.errors import OctoCheckpointError

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
    given = i.add_mutually_exclusive_group(required=True)
    given.add_argument("--text", nargs="+", help="the instructions, in task_id order")
    given.add_argument("--file", help="text file with one instruction a line, in task_id order ('-': stdin)")
    args = p.parse_args(argv)
    try:
        if args.cmd == "checkpoint":
            convert_checkpoint(args.src, args.dst, args.keep_t5, args.step)
        else:
            text = args.text if args.file is None else read_instructions(args.file)
            encode_instructions(args.t5_dir, args.dst, text)
    except (OctoCheckpointError, ValueError) as err:
        p.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
