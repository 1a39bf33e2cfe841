"""`python -m detrzoo ...` (e.g. under `torchrun --nproc_per_node=N -m detrzoo train -c CFG`)."""
from detrzoo.cli import main

main()
