"""Learning-rate schedules of the trainer: the rate of one rank scaled linearly to
``lr * world_size`` over the warm-up (Goyal et al., 2017)."""

from __future__ import annotations

import tensorflow as tf


@tf.keras.utils.register_keras_serializable("iapdcnn")
class WarmupScaled(tf.keras.optimizers.schedules.LearningRateSchedule):
    """``base_lr`` -> ``base_lr * world_size``, linearly over ``warmup_steps``, then flat.

    Args:
      base_lr: the learning rate of one rank.
      world_size: number of ranks (the global batch is ``world_size`` local batches).
      warmup_steps: steps of the linear ramp (<= 1: scaled from the first step).
    """

    def __init__(self, base_lr: float, world_size: int, warmup_steps: float) -> None:
        super().__init__()
        self.base_lr, self.world_size = float(base_lr), int(world_size)
        self.warmup_steps = float(warmup_steps)

    def __call__(self, step):
        warm = max(self.warmup_steps, 1.0)
        frac = tf.minimum(tf.cast(step, tf.float32) / warm, 1.0)
        return self.base_lr * (1.0 + (self.world_size - 1) * frac)

    def get_config(self) -> dict:
        return {
            "base_lr": self.base_lr,
            "world_size": self.world_size,
            "warmup_steps": self.warmup_steps,
        }
