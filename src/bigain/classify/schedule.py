"""Timestep grid and adaptive stage plan of the diffusion classifier (BiGain protocol).

With ``T`` training timesteps and ``m = max(n_samples)`` the candidate timesteps are
``range(T // m // 2, T, T // m)[:m]``. Stage ``k`` evaluates ``n_k`` of them, spread evenly
(every ``m // n_k``-th, starting at the middle of the first stride), minus those evaluated in
earlier stages. Each timestep gets ``n_trials`` noise slots, numbered in the order the timestep is
first evaluated; slot ``j`` holds the same noise tensor for every class of an image.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One stage of the adaptive schedule."""

    timesteps: tuple[int, ...]  # new timesteps evaluated in this stage, in evaluation order
    slots: tuple[int, ...]  # noise slot of each (timestep, trial), aligned with `slot_timesteps`
    slot_timesteps: tuple[int, ...]  # timestep of each slot in `slots`
    keep: int  # how many classes survive this stage


def validate_schedule(n_samples: tuple[int, ...], to_keep: tuple[int, ...], num_train_timesteps: int) -> None:
    """Raise ValueError when the stage settings cannot describe an adaptive schedule."""
    n_samples, to_keep = tuple(n_samples), tuple(to_keep)
    if len(n_samples) == 0 or len(n_samples) != len(to_keep):
        raise ValueError(
            f"n_samples={n_samples} and to_keep={to_keep} must be non-empty and of the same length"
        )
    if any(int(n) < 1 for n in n_samples) or list(n_samples) != sorted(n_samples):
        raise ValueError(f"n_samples={n_samples} must be positive and non-decreasing")
    if any(int(k) < 1 for k in to_keep) or list(to_keep) != sorted(to_keep, reverse=True):
        raise ValueError(f"to_keep={to_keep} must be positive and non-increasing")
    if to_keep[-1] != 1:
        raise ValueError(f"to_keep={to_keep}: the last stage must keep exactly 1 class (the prediction)")
    m = max(n_samples)
    if m > num_train_timesteps // 2:
        raise ValueError(
            f"n_samples={n_samples}: at most {num_train_timesteps // 2} timesteps for T={num_train_timesteps}"
        )


def timestep_grid(num_train_timesteps: int, m: int) -> list[int]:
    """The m candidate timesteps: ``range(T // m // 2, T, T // m)[:m]``."""
    return list(range(num_train_timesteps // m // 2, num_train_timesteps, num_train_timesteps // m))[:m]


def stage_timesteps(num_train_timesteps: int, n_samples: tuple[int, ...]) -> list[list[int]]:
    """The new timesteps of each stage, in evaluation order."""
    m = max(n_samples)
    grid = timestep_grid(num_train_timesteps, m)
    seen: set[int] = set()
    stages = []
    for n in n_samples:
        stride = m // n
        chosen = [t for t in grid[stride // 2 :: stride][:n] if t not in seen]
        seen.update(chosen)
        stages.append(chosen)
    return stages


def adaptive_plan(
    num_train_timesteps: int,
    n_samples: tuple[int, ...] = (5, 20),
    to_keep: tuple[int, ...] = (5, 1),
    n_trials: int = 1,
) -> list[Stage]:
    """The full stage plan, with the noise slot of every (timestep, trial)."""
    validate_schedule(n_samples, to_keep, num_train_timesteps)
    if n_trials < 1:
        raise ValueError(f"n_trials={n_trials} must be >= 1")
    plan = []
    t_index = 0  # order of first evaluation
    for ts, keep in zip(stage_timesteps(num_train_timesteps, tuple(n_samples)), to_keep):
        slots, slot_ts = [], []
        for t in ts:
            for trial in range(n_trials):
                slots.append(n_trials * t_index + trial)
                slot_ts.append(t)
            t_index += 1
        plan.append(Stage(tuple(ts), tuple(slots), tuple(slot_ts), int(keep)))
    return plan


def num_slots(plan: list[Stage]) -> int:
    return sum(len(s.slots) for s in plan)


def calls_per_image(num_classes: int, plan: list[Stage]) -> int:
    """Denoiser rows per image: every surviving class at every new slot of every stage."""
    total, alive = 0, num_classes
    for stage in plan:
        total += alive * len(stage.slots)
        alive = min(alive, stage.keep)
    return total
