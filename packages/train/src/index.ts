/**
 * @multimeditron/train: MultiMeditron's trainer: the four training modes, the original's YAML, AdamW and SGD with
 * torch semantics, Hugging Face schedules, resumable checkpoints in the MultiMeditron layout, a feature cache for
 * frozen encoders, progress, metrics and plots.
 * @packageDocumentation
 */
import 'reflect-metadata';

export * from './loss.js';
export * from './optim.js';
export * from './schedule.js';
export * from './modes.js';
export * from './config.js';
export * from './feature-cache.js';
export * from './trainer.js';
export { renderTrainingPlotSvg, writeTrainingPlots, type PlotOptions } from './plot.js';
