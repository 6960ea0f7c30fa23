/**
 * `multimeditron train --config stage1.yaml [--progress auto|bar|json|none]`: trains with the original's YAML
 * (see docs/training.md). Progress goes to stderr: a one-line bar on a TTY (step, loss, learning rate, tokens/s,
 * ETA), JSON lines otherwise. Ctrl-C (SIGINT) or SIGTERM finishes the current step, saves a checkpoint and exits
 * with 130. The summary is printed on stdout as one JSON line.
 *
 * `multimeditron plot <output_dir>` redraws `training_curves.{png,svg}` from the run's log history.
 * @module
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { MultimeditronError } from '@multimeditron/core';
import { lastCheckpoint, readTrainConfig, train, TRAINER_STATE_FILE, writeTrainingPlots, type LogEntry, type StepProgress, type TrainResult } from '@multimeditron/train';
import { createHost, type HostOptions } from '../host.js';
import { CliExit, EXIT_OK, EXIT_USAGE } from '../errors.js';
import { fitBar, formatDuration, PROGRESS_MODES, type ProgressMode, type ProgressStream } from '../internal/progress.js';

/** Options of the train command. */
export interface TrainCommandOptions extends HostOptions {
  config: string;
  progress?: ProgressMode;
}

/** Exit code of a run stopped by a signal (after its checkpoint). */
export const EXIT_INTERRUPTED = 130;

/** The bar line of a training step, fitted to `width` columns. */
export function renderTrainBar(p: StepProgress, width: number): string {
  const frac = Math.min(1, p.step / p.maxSteps);
  const tail = ` ${p.step}/${p.maxSteps} · loss ${p.loss.toFixed(4)} · lr ${p.learningRate.toExponential(2)} · ${p.tokensPerSecond.toFixed(0)} tok/s · ETA ${formatDuration(p.etaSeconds * 1000)}${p.skippedSamples ? ` · ${p.skippedSamples} skipped` : ''}`;
  return fitBar(frac, tail, width, 30);
}

/** Runs `train`; returns the exit code. */
export async function runTrain(opts: TrainCommandOptions, out: ProgressStream = process.stderr, stdout: { write(s: string): unknown } = process.stdout): Promise<number> {
  const mode = opts.progress ?? 'auto';
  if (!PROGRESS_MODES.includes(mode)) throw new CliExit(EXIT_USAGE, `--progress must be one of ${PROGRESS_MODES.join(', ')}`);
  const draw = mode === 'auto' ? (out.isTTY ? 'bar' : 'json') : mode;
  const { mm } = await createHost(opts);
  let config;
  try {
    config = await readTrainConfig(path.resolve(opts.config), { warn: (m) => mm.logger.warn(m) });
  } catch (e) {
    if (e instanceof MultimeditronError) throw new CliExit(EXIT_USAGE, e.message);
    throw e;
  }
  const abort = new AbortController();
  const onSignal = (sig: string) => {
    if (abort.signal.aborted) process.exit(EXIT_INTERRUPTED);
    out.write(`${draw === 'bar' ? '\n' : ''}${sig}: finishing the current step and saving a checkpoint (again to quit now)\n`);
    abort.abort();
  };
  const sigint = () => onSignal('SIGINT');
  const sigterm = () => onSignal('SIGTERM');
  process.on('SIGINT', sigint);
  process.on('SIGTERM', sigterm);
  let lastDraw = 0;
  let result: TrainResult;
  try {
    result = await train(config, {
      mm,
      signal: abort.signal,
      onStep: (p) => {
        if (draw === 'bar') {
          const now = Date.now();
          if (now - lastDraw > 100 || p.step === p.maxSteps) {
            out.write(`\r${renderTrainBar(p, out.columns ?? 100)}`);
            lastDraw = now;
          }
        } else if (draw === 'json') {
          out.write(`${JSON.stringify({ type: 'step', ...p })}\n`);
        }
      },
      onResume: (r) => {
        out.write(draw === 'json' ? `${JSON.stringify({ type: 'resume', ...r })}\n` : `resuming from ${r.dir} at step ${r.step}\n`);
      },
      onSave: (dir) => {
        if (draw === 'json') out.write(`${JSON.stringify({ type: 'checkpoint', dir })}\n`);
      },
    });
  } finally {
    process.off('SIGINT', sigint);
    process.off('SIGTERM', sigterm);
    if (draw === 'bar') out.write('\n');
  }
  stdout.write(`${JSON.stringify({
    global_step: result.globalStep, max_steps: result.maxSteps, train_loss: result.trainLoss, skipped_samples: result.skippedSamples,
    stopped: result.stopped, runtime_s: result.runtime, checkpoints: result.checkpoints, output_dir: config.training_args.output_dir,
    feature_cache: result.featureCache,
  })}\n`);
  return result.stopped ? EXIT_INTERRUPTED : EXIT_OK;
}

/** The log history of a run folder: its `trainer_state.json`, else the last checkpoint's, else `metrics.jsonl`. */
export async function readLogHistory(dir: string): Promise<LogEntry[]> {
  const candidates = [path.join(dir, TRAINER_STATE_FILE)];
  const last = await lastCheckpoint(dir);
  if (last) candidates.push(path.join(last, TRAINER_STATE_FILE));
  for (const f of candidates) {
    try {
      return (JSON.parse(await fs.readFile(f, 'utf8')) as { log_history: LogEntry[] }).log_history;
    } catch {
      // try the next one
    }
  }
  try {
    const text = await fs.readFile(path.join(dir, 'metrics.jsonl'), 'utf8');
    return text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as LogEntry);
  } catch {
    throw new CliExit(EXIT_USAGE, `${dir} holds no trainer_state.json, checkpoint-<step>/trainer_state.json nor metrics.jsonl`);
  }
}

/** Runs `plot`; returns the exit code. */
export async function runPlot(dir: string, stdout: { write(s: string): unknown } = process.stdout): Promise<number> {
  const history = await readLogHistory(path.resolve(dir));
  const files = await writeTrainingPlots(path.resolve(dir), history);
  stdout.write(`${JSON.stringify(files)}\n`);
  return EXIT_OK;
}

/** Registers `train` and `plot`. */
export function registerTrain(program: Command): void {
  program
    .command('train')
    .description('train a MultiMeditron model from the original\'s YAML config (ALIGNMENT, END2END, LM_ONLY, FULL)')
    .requiredOption('--config <file.yaml>', 'the training config')
    .option('--progress <mode>', 'auto (bar on a TTY, JSON lines otherwise), bar, json or none', 'auto')
    .option('--plugins <list>', 'comma-separated plugin packages (default: discovered)')
    .option('--backend <name>', 'tfjs backend: tensorflow, wasm or cpu')
    .action(async (opts: TrainCommandOptions) => {
      process.exitCode = await runTrain(opts);
    });
  program
    .command('plot <output_dir>')
    .description('redraw training_curves.png and .svg (loss and learning rate) from a training run\'s logs')
    .action(async (dir: string) => {
      process.exitCode = await runPlot(dir);
    });
}
