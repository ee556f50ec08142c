"""Learning-rate schedules of the trainer: the rate of one rank scaled linearly to
``lr * world_size`` over the warm-up (Goyal et al., 2017), then decayed to the end of training:
``cosine`` (Loshchilov and Hutter's SGDR without restarts), ``step`` (x0.1 at 50% and 75% of the
steps, Goyal et al.'s shape) or ``constant`` (the trainer's behaviour before decay existed)."""

from __future__ import annotations

import math

import tensorflow as tf

from .config import SCHEDULES

STEP_MILESTONES = (0.5, 0.75)  # fractions of all steps
STEP_FACTOR = 0.1


@tf.keras.utils.register_keras_serializable("iapdcnn")
class WarmupDecay(tf.keras.optimizers.schedules.LearningRateSchedule):
    """``base_lr`` -> ``base_lr * world_size`` linearly over ``warmup_steps``, then ``decay``.

    Args:
      base_lr: the learning rate of one rank (> 0).
      world_size: number of ranks (the global batch is ``world_size`` local batches).
      warmup_steps: steps of the linear ramp (<= 1: scaled from the first step).
      total_steps: all steps of the run; the decay ends there (cosine reaches 0).
      decay: one of ``SCHEDULES``.
    """

    def __init__(
        self,
        base_lr: float,
        world_size: int,
        warmup_steps: float,
        total_steps: int = 1,
        decay: str = "constant",
    ) -> None:
        super().__init__()
        if decay not in SCHEDULES:
            raise ValueError(
                f"decay (--lr-schedule) must be one of {', '.join(SCHEDULES)}, got {decay!r}"
            )
        if not (math.isfinite(base_lr) and base_lr > 0):
            raise ValueError(f"base_lr (--lr) must be > 0, got {base_lr}")
        if int(world_size) < 1 or int(total_steps) < 1 or not warmup_steps >= 0:
            raise ValueError(
                "world_size and total_steps must be >= 1 and warmup_steps >= 0, got "
                f"{world_size}, {total_steps}, {warmup_steps}"
            )
        self.base_lr, self.world_size = float(base_lr), int(world_size)
        self.warmup_steps, self.total_steps = float(warmup_steps), int(total_steps)
        self.decay = decay

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = max(self.warmup_steps, 1.0)
        peak = self.base_lr * self.world_size
        ramp = self.base_lr * (1.0 + (self.world_size - 1) * tf.minimum(step / warm, 1.0))
        if self.decay == "constant":
            return ramp
        total = float(self.total_steps)
        if self.decay == "cosine":
            span = max(total - self.warmup_steps, 1.0)
            frac = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
            decayed = 0.5 * peak * (1.0 + tf.cos(math.pi * frac))
        else:
            drops = sum(tf.cast(step >= m * total, tf.float32) for m in STEP_MILESTONES)
            decayed = peak * tf.pow(STEP_FACTOR, drops)
        return tf.where(step < self.warmup_steps, ramp, decayed)

    def get_config(self) -> dict:
        return {
            "base_lr": self.base_lr,
            "world_size": self.world_size,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "decay": self.decay,
        }
