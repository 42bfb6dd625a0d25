"""Training and fine-tuning: targets from annotation, weight maps, augmentation, losses, the loop.

- :mod:`.annotations`: training targets from scribbles, corrections and class masks.
- :mod:`.weight_map`: the paper's border weights.
- :mod:`.augment`: elastic deformation, flips, rotations, intensity changes.
- :mod:`.losses`: masked (weighted) cross-entropy and Dice.
- :mod:`.metrics`: matched-object F1 and class IoU for validation.
- :mod:`.finetune`: training samples from what a user painted, held-back validation.
- :mod:`.steps`: optimiser and schedule, batch loading, the out-of-memory-retrying step.
- :mod:`.loop`: :func:`~.loop.train_job`, the stoppable training job.
- :mod:`.recipe`: defaults that depend on how a model is trained (learning rate).
- :mod:`.finetune_job`: :func:`~.finetune_job.finetune_job`, the one fine-tuning path of the
  widget, the command line and the few-shot benchmark.
"""
