"""Measurements of a detector and its predictions: COCO evaluation, per-class AP, P/R/F1 and the
confusion matrix, TIDE errors, and the FLOP/parameter counter. Below the engine, above models."""
