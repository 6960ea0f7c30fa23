/**
 * `multimeditron embed <dataset> --config run.json --out <dir>`: the embedding run of the core pipeline
 * (`runEmbedding`), with a progress bar on a TTY and JSON lines otherwise (both on stderr), the summary on stdout.
 *
 * Exit codes: 0 every sample embedded; 1 some samples failed (listed in `<out>/errors.jsonl`); 2 a usage or
 * configuration error (invalid run config, unknown plugin or modality, output folder holding another run);
 * 130 interrupted (committed shards are kept; run the command again to resume).
 * @module
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import {
  createMultimeditron, findPackageRoot, loadRunConfig, MultimeditronError, runEmbedding, ERRORS_FILE,
  type CreateMultimeditronOptions, type EmbeddingSummary, type Multimeditron,
} from '@multimeditron/core';
import { CLI_ROOT, createHost } from '../host.js';
import { CliExit, EXIT_FAILURES, EXIT_OK, EXIT_USAGE } from '../errors.js';
import { createProgressReporter, formatDuration, PROGRESS_MODES, type ProgressMode } from '../internal/progress.js';

/** Options of the embed command. */
export interface EmbedOptions {
  config: string;
  out: string;
  workers?: string;
  taskTimeout?: string;
  overwrite?: boolean;
  progress?: string;
  json?: boolean;
  plugins?: string;
  backend?: string;
}

/** Exit code of an interrupted run (128 + SIGINT). */
export const EXIT_INTERRUPTED = 130;

/** Error codes that mean "fix your command or config" (exit 2) when they stop an embed run. */
const USAGE_CODES = new Set([
  'E_CONFIG', 'E_UNKNOWN', 'E_BACKEND', 'E_PLUGIN', 'E_RESOLVE', 'E_DUPLICATE', 'E_RUN_MISMATCH', 'E_RUN_STATE', 'E_MODEL',
]);

function usage(message: string, suggestions: string[] = []): CliExit {
  return Object.assign(new CliExit(EXIT_USAGE, message), { suggestions });
}

/**
 * Plugin specifiers of the run config, each resolved to its package folder: package names from the config's
 * folder, then the current directory, then the CLI's own dependencies. Unresolvable names are kept as they are
 * (the instance then reports them).
 */
export async function resolvePluginSpecs(specs: string[], baseDir: string, cwd = process.cwd()): Promise<string[]> {
  const out: string[] = [];
  for (const spec of specs) {
    if (path.isAbsolute(spec)) {
      out.push(spec);
      continue;
    }
    let root: string | undefined;
    for (const from of [baseDir, cwd, CLI_ROOT]) {
      root = await findPackageRoot(spec, from);
      if (root) break;
    }
    out.push(root ?? spec);
  }
  return out;
}

function describe(s: EmbeddingSummary): string {
  const lines: string[] = [];
  const todo = s.total === undefined ? '' : ` of ${s.total}`;
  if (s.aborted) {
    lines.push(`interrupted: ${s.samples}${todo} samples stored in ${s.outDir} (${s.shards} shard(s)); run the same command again to resume`);
  } else if (s.processed === 0 && s.complete) {
    lines.push(`already complete: ${s.samples}${todo} samples in ${s.outDir} (${s.shards} shard(s)); nothing to do`);
  } else {
    lines.push(`embedded ${s.samples}${todo} samples into ${s.outDir} (${s.shards} shard(s))${s.resumed ? `, resumed after ${s.skipped}` : ''}`);
  }
  if (s.errors) lines.push(`${s.errors} sample(s) failed: see ${path.join(s.outDir, ERRORS_FILE)}`);
  const speed = s.processed ? ` · ${s.samplesPerSec.toFixed(1)} samples/s` : '';
  lines.push(
    `run ${s.runId} · ${formatDuration(s.elapsedMs)}${speed} · ` +
      `${s.workers ? `${s.workers} worker thread(s)` : 'main thread'}${s.workerCrashes ? ` (${s.workerCrashes} died and were replaced)` : ''}`,
  );
  return `${lines.join('\n')}\n`;
}

/** Registers `embed` on the program. */
export function registerEmbed(program: Command): void {
  program
    .command('embed <dataset>')
    .description('embed a dataset (JSONL or Parquet) into resumable safetensors shards, as the run config says (docs/embed.md)')
    .requiredOption('-c, --config <file>', 'run config (JSON): plugins, modalities, loaders, tokenizer, batch settings')
    .requiredOption('-o, --out <dir>', 'output folder (manifest.json, shard-NNNNN.safetensors/.jsonl, errors.jsonl)')
    .option('-w, --workers <n>', 'worker threads for loading and processing; 0 = main thread (default: the config\'s batch.workers, else min(2, cores))')
    .option('--task-timeout <seconds>', 'a sample that keeps a worker busy longer than this is recorded as failed (E_WORKER) and its worker replaced (default: no limit)')
    .option('--overwrite', 'discard a previous run in --out (default: resume it, or refuse if its config or dataset differ)')
    .option('--progress <mode>', `progress on stderr: ${PROGRESS_MODES.join(' | ')} (auto = a bar on a TTY, JSON lines otherwise)`, 'auto')
    .option('--json', 'print the summary as JSON on stdout')
    .option('--plugins <list>', 'comma-separated plugin packages or paths (default: the run config\'s plugins, else discovered)')
    .option('--backend <name>', 'tensorflow | wasm | cpu (default: MULTIMEDITRON_BACKEND, else automatic)')
    .addHelpText('after', `
Exit codes: 0 all samples embedded; 1 some samples failed (see errors.jsonl); 2 usage or config error;
130 interrupted (committed shards are kept: run the same command again to resume).`)
    .action(async (dataset: string, opts: EmbedOptions) => {
      let workers: number | undefined;
      if (opts.workers !== undefined) {
        workers = Number(opts.workers);
        if (!Number.isInteger(workers) || workers < 0 || workers > 256) throw usage(`--workers must be an integer from 0 to 256, got "${opts.workers}"`);
      }
      let taskTimeoutMs: number | undefined;
      if (opts.taskTimeout !== undefined) {
        const s = Number(opts.taskTimeout);
        if (!Number.isFinite(s) || s <= 0) throw usage(`--task-timeout must be a positive number of seconds, got "${opts.taskTimeout}"`);
        taskTimeoutMs = Math.round(s * 1000);
      }
      const mode = (opts.progress ?? 'auto') as ProgressMode;
      if (!PROGRESS_MODES.includes(mode)) throw usage(`--progress must be one of ${PROGRESS_MODES.join(', ')}, got "${opts.progress}"`);
      if (!(await fs.stat(dataset).then((s) => s.isFile(), () => false))) throw usage(`dataset not found: ${dataset}`);

      const rc = await loadRunConfig(opts.config);
      let mm: Multimeditron;
      const backend = opts.backend ? { backend: opts.backend as CreateMultimeditronOptions['backend'] } : {};
      if (!opts.plugins && rc.plugins) {
        mm = await createMultimeditron({ plugins: await resolvePluginSpecs(rc.plugins, rc.baseDir), strict: true, ...backend });
      } else {
        ({ mm } = await createHost({ ...(opts.plugins ? { plugins: opts.plugins } : {}), ...(opts.backend ? { backend: opts.backend } : {}) }));
      }

      const reporter = createProgressReporter(mode, process.stderr);
      const controller = new AbortController();
      let interrupts = 0;
      const onSignal = (sig: NodeJS.Signals) => {
        interrupts++;
        if (interrupts > 1) process.exit(EXIT_INTERRUPTED);
        process.stderr.write(`\n${sig}: stopping after the current batch (committed shards are kept; press Ctrl-C again to quit now)\n`);
        controller.abort();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      let summary: EmbeddingSummary;
      try {
        summary = await runEmbedding({
          mm, dataset, runConfig: rc, outDir: opts.out,
          ...(workers !== undefined ? { workers } : {}),
          ...(taskTimeoutMs !== undefined ? { taskTimeoutMs } : {}),
          ...(opts.overwrite ? { overwrite: true } : {}),
          onProgress: (e) => reporter.onEvent(e),
          signal: controller.signal,
        });
      } catch (e) {
        reporter.finish();
        if (e instanceof MultimeditronError && USAGE_CODES.has(e.code)) throw usage(e.message, e.suggestions);
        throw e;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      reporter.finish();
      if (mode === 'json' || (mode === 'auto' && !process.stderr.isTTY)) {
        process.stderr.write(`${JSON.stringify({ event: 'done', time: new Date().toISOString(), ...summary })}\n`);
      }
      process.stdout.write(opts.json ? `${JSON.stringify(summary, null, 2)}\n` : describe(summary));
      process.exitCode = summary.aborted ? EXIT_INTERRUPTED : summary.errors > 0 ? EXIT_FAILURES : EXIT_OK;
    });
}
