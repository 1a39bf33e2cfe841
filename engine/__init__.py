"""The shared trainer: config composition, optimizer and schedules, EMA, checkpoints, DDP, evaluation,
logging, and the solver that runs them (train.py, predict.py)."""
