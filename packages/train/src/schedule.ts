/**
 * Learning-rate schedules of the Hugging Face Trainer (`transformers.get_scheduler`, a `LambdaLR` over the base
 * learning rate). The factor at optimizer step s (0-based: the first update uses s = 0) is:
 *
 * - `constant`: 1 (no warmup, as in transformers);
 * - `constant_with_warmup`: s / warmup during warmup, then 1;
 * - `linear`: s / warmup during warmup, then `max(0, (total - s) / (total - warmup))`;
 * - `cosine`: warmup, then `max(0, 0.5 (1 + cos(pi · 2 · 0.5 · progress)))`, progress = (s - warmup) / (total - warmup);
 * - `cosine_with_min_lr`: warmup, then `cosine · (1 - min_lr / lr) + min_lr / lr` (or `min_lr_rate`).
 *
 * Divisions by the warmup or decay length use `max(1, ...)` as transformers does.
 * @module
 */
import { ConfigValidationError } from '@multimeditron/core';

/** The supported `lr_scheduler_type` values. */
export const SCHEDULER_TYPES = ['constant', 'constant_with_warmup', 'linear', 'cosine', 'cosine_with_min_lr'] as const;
export type SchedulerType = (typeof SCHEDULER_TYPES)[number];

/** A schedule: the learning rate of each optimizer step. */
export interface LrSchedule {
  readonly type: SchedulerType;
  readonly baseLr: number;
  readonly warmupSteps: number;
  readonly totalSteps: number;
  /** The learning rate of (0-based) optimizer step `s`. */
  lrAt(s: number): number;
}

/** Options of {@link createSchedule}. */
export interface ScheduleOptions {
  type: SchedulerType;
  baseLr: number;
  totalSteps: number;
  warmupSteps: number;
  /** `lr_scheduler_kwargs` (`min_lr` or `min_lr_rate` for cosine_with_min_lr, `num_cycles` for cosine). */
  kwargs?: Record<string, unknown>;
  /** Where the options came from, for errors. */
  source?: string;
}

/** Builds a schedule; invalid kwargs are a {@link ConfigValidationError}. */
export function createSchedule(options: ScheduleOptions): LrSchedule {
  const { type, baseLr, totalSteps, warmupSteps } = options;
  const source = options.source ?? 'training_args';
  const kwargs = options.kwargs ?? {};
  const allowed: Record<SchedulerType, string[]> = {
    constant: [],
    constant_with_warmup: [],
    linear: [],
    cosine: ['num_cycles'],
    cosine_with_min_lr: ['num_cycles', 'min_lr', 'min_lr_rate'],
  };
  for (const k of Object.keys(kwargs)) {
    if (!allowed[type].includes(k)) {
      throw new ConfigValidationError(source, [{ path: `/training_args/lr_scheduler_kwargs/${k}`, rule: 'additionalProperties', message: `is not an argument of the ${type} schedule (allowed: ${allowed[type].join(', ') || 'none'})` }]);
    }
    if (typeof kwargs[k] !== 'number' || !Number.isFinite(kwargs[k])) {
      throw new ConfigValidationError(source, [{ path: `/training_args/lr_scheduler_kwargs/${k}`, rule: 'type', message: 'must be a number' }]);
    }
  }
  const numCycles = (kwargs['num_cycles'] as number | undefined) ?? 0.5;
  let minRate = 0;
  if (type === 'cosine_with_min_lr') {
    const minLr = kwargs['min_lr'] as number | undefined;
    const rate = kwargs['min_lr_rate'] as number | undefined;
    if ((minLr === undefined) === (rate === undefined)) {
      throw new ConfigValidationError(source, [{ path: '/training_args/lr_scheduler_kwargs', rule: 'required', message: 'cosine_with_min_lr needs exactly one of min_lr and min_lr_rate' }]);
    }
    minRate = rate ?? minLr! / baseLr;
  }
  const warm = (s: number) => s / Math.max(1, warmupSteps);
  const progress = (s: number) => (s - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
  const factor = (s: number): number => {
    switch (type) {
      case 'constant':
        return 1;
      case 'constant_with_warmup':
        return s < warmupSteps ? warm(s) : 1;
      case 'linear':
        return s < warmupSteps ? warm(s) : Math.max(0, (totalSteps - s) / Math.max(1, totalSteps - warmupSteps));
      case 'cosine':
        return s < warmupSteps ? warm(s) : Math.max(0, 0.5 * (1 + Math.cos(Math.PI * numCycles * 2 * progress(s))));
      case 'cosine_with_min_lr': {
        if (s < warmupSteps) return warm(s);
        const c = 0.5 * (1 + Math.cos(Math.PI * numCycles * 2 * progress(s)));
        return c * (1 - minRate) + minRate;
      }
    }
  };
  return { type, baseLr, warmupSteps, totalSteps, lrAt: (s: number) => baseLr * factor(s) };
}
