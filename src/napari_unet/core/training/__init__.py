"""Training and fine-tuning: targets from annotation, weight maps, augmentation, losses, the loop.

- :mod:`.annotations`: training targets from scribbles, corrections and class masks.
- :mod:`.weight_map`: the paper's border weights.
- :mod:`.augment`: elastic deformation, flips, rotations, intensity changes.
- :mod:`.losses`: masked (weighted) cross-entropy and Dice.
- :mod:`.metrics`: matched-object F1 and class IoU for validation.
- :mod:`.finetune`: training samples from what a user painted, held-back validation.
- :mod:`.loop`: :func:`~.loop.train_job`, the stoppable training job.
"""
