"""``python -m convgen`` (also what ``torchrun -m convgen run ...`` starts on each process)."""

from convgen.cli import main

main()
