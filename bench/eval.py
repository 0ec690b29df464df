"""Session baselines side by side: ``python bench/eval.py --data DIR --format F --models ...``.

The same runner and options as ``fusionrec eval`` (``flows.commands.eval.eval_command``); this
script lets a benchmark start from ``bench/`` without the console script.
"""

from __future__ import annotations

import typer

from flows.commands.eval import eval_command

if __name__ == "__main__":
    typer.run(eval_command)
