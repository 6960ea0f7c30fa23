/**
 * `multimeditron check-dataset <dataset>`: validates a JSONL or Parquet dataset without running a model and
 * reports every per-sample error as `file:line: message`, then a summary (samples, ok, failed, errors by kind).
 * `--load` also runs the plugins' loaders on every modality (`fs-<type>` for paths, `raw-<type>` for bytes,
 * or the run config's loaders). Exit code 0 when every sample is valid, 1 when some are not, 2 on usage errors.
 * @module
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import {
  checkRunConfig, datasetFormat, loadRunConfig, ModalityLoaderPool, MultimeditronError, openDataset, SampleError,
  type DatasetFormat, type LoaderSpec, type Multimeditron, type SampleErrorKind,
} from '@multimeditron/core';
import { createHost, type HostOptions } from '../host.js';
import { CliExit, EXIT_FAILURES, EXIT_OK, EXIT_USAGE } from '../errors.js';

/** Options of the check-dataset command. */
export interface CheckDatasetOptions extends HostOptions {
  modalityTypes?: string;
  load?: boolean;
  json?: boolean;
  allowOutside?: boolean;
  checkFiles?: boolean;
  config?: string;
  attachmentToken?: string;
  format?: string;
  maxErrors?: string;
}

/** The summary printed at the end (and as the last JSON line with `--json`). */
export interface CheckDatasetSummary {
  type: 'summary';
  file: string;
  format: DatasetFormat;
  samples: number;
  ok: number;
  failed: number;
  /** Error counts by {@link SampleErrorKind}. */
  errors: Partial<Record<SampleErrorKind, number>>;
  /** Modalities by type, over the valid samples. */
  modalities: Record<string, number>;
  /** Whether the loaders ran. */
  loaded: boolean;
  /** The modality types checked against (undefined: no check). */
  modalityTypes?: string[];
}

function list(s: string | undefined): string[] | undefined {
  if (s === undefined) return undefined;
  return s.split(',').map((x) => x.trim()).filter(Boolean);
}

/** The modality types the instance's plugins register (loaders and modalities), or undefined when none. */
function registeredTypes(mm: Multimeditron): string[] | undefined {
  const types = new Set([...mm.loaderRegistry.all().map((r) => r.modalityType), ...mm.modalityRegistry.all().map((r) => r.modalityType)]);
  return types.size ? [...types].sort() : undefined;
}

/** Adds `check-dataset` to the program. */
export function registerCheckDataset(program: Command): void {
  program
    .command('check-dataset <dataset>')
    .description('validate a JSONL or Parquet dataset without running a model: report every bad sample (file:line: message) and a summary; exits 1 if any sample fails')
    .option('--modality-types <list>', 'comma-separated known modality types (default: those of the run config, else of the loaded plugins)')
    .option('--load', 'also run the loaders on every modality (fs-<type> for paths, raw-<type> for bytes)')
    .option('--json', 'print JSON lines: one per error, then the summary')
    .option('--allow-outside', 'allow sample paths that leave the dataset folder')
    .option('--no-check-files', 'do not check that path values name existing files')
    .option('--config <run.json>', 'run config: its plugins, loaders, modality types, attachment token and dataset settings')
    .option('--attachment-token <token>', 'the placeholder (default: the run config\'s, else <|reserved_special_token_0|>)')
    .option('--format <format>', 'jsonl | parquet (default: from the extension)')
    .option('--max-errors <n>', 'print at most n error lines (the summary still counts all)')
    .option('--plugins <list>', 'comma-separated plugin packages or paths (default: the run config\'s, else discovered)')
    .action(async (dataset: string, opts: CheckDatasetOptions) => {
      process.exitCode = await checkDataset(dataset, opts);
    });
}

/** Runs the check and prints the report; returns the exit code. */
export async function checkDataset(dataset: string, opts: CheckDatasetOptions): Promise<number> {
  let format: DatasetFormat;
  try {
    format = opts.format ? (['jsonl', 'parquet'].includes(opts.format) ? (opts.format as DatasetFormat) : usage(`--format must be jsonl or parquet, got "${opts.format}"`)) : datasetFormat(dataset);
  } catch (e) {
    if (e instanceof CliExit) throw e;
    throw new CliExit(EXIT_USAGE, (e as Error).message);
  }
  const st = await fs.stat(dataset).catch(() => undefined);
  if (!st?.isFile()) usage(`${dataset}: dataset file not found`);
  const maxErrors = opts.maxErrors === undefined ? Infinity : Number(opts.maxErrors);
  if (!(maxErrors >= 0)) usage(`--max-errors must be a non-negative number, got "${opts.maxErrors}"`);

  const rc = opts.config ? await loadRunConfig(opts.config) : undefined;
  const needHost = Boolean(opts.load || rc || opts.modalityTypes === undefined);
  let mm: Multimeditron | undefined;
  if (needHost) {
    const hostOpts: HostOptions = { ...opts, ...(!opts.plugins && rc?.plugins ? { plugins: rc.plugins.join(',') } : {}) };
    ({ mm } = await createHost(hostOpts, { backend: false }));
    for (const e of mm.plugins.errors) process.stderr.write(`warning: ${e.message}\n`);
  }
  let modalityTypes = list(opts.modalityTypes);
  let loaders: LoaderSpec[] | undefined;
  if (rc && mm) {
    const checked = await checkRunConfig(mm, rc);
    modalityTypes ??= checked.modalities.map((m) => m.modalityType);
    loaders = rc.loaders;
  }
  if (opts.modalityTypes === undefined && !rc && mm) modalityTypes = registeredTypes(mm);
  const attachmentToken = opts.attachmentToken ?? rc?.collator.attachmentToken;
  const allowOutsideBase = Boolean(opts.allowOutside || rc?.dataset.allowOutsideBase);
  const pool = opts.load && mm ? new ModalityLoaderPool(mm.loaders) : undefined;

  const summary: CheckDatasetSummary = {
    type: 'summary', file: dataset, format, samples: 0, ok: 0, failed: 0, errors: {}, modalities: {}, loaded: Boolean(pool),
    ...(modalityTypes ? { modalityTypes } : {}),
  };
  let printed = 0;
  const report = (errors: SampleError[], index: number) => {
    for (const e of errors) {
      summary.errors[e.kind] = (summary.errors[e.kind] ?? 0) + 1;
      if (printed >= maxErrors) continue;
      printed++;
      if (opts.json) {
        process.stdout.write(`${JSON.stringify({
          type: 'error', file: e.file, line: e.line, index, kind: e.kind,
          ...(e.modalityIndex !== undefined ? { modalityIndex: e.modalityIndex } : {}), message: e.detail,
        })}\n`);
      } else {
        process.stdout.write(`${e.message}\n`);
      }
    }
  };

  for await (const rec of openDataset(dataset, {
    format, allowOutsideBase, checkFiles: opts.checkFiles !== false,
    ...(modalityTypes ? { modalityTypes } : {}),
    ...(attachmentToken ? { attachmentToken } : {}),
  })) {
    summary.samples++;
    let errors = rec.errors ?? [];
    if (!errors.length && pool) {
      const failures = await Promise.all(rec.sample!.modalities.map(async (m, i) => {
        try {
          await pool.load(m, { baseDir: rec.baseDir, allowOutsideBase, ...(loaders ? { loaders } : {}) });
          return undefined;
        } catch (e) {
          const msg = e instanceof MultimeditronError || e instanceof Error ? e.message : String(e);
          return new SampleError(rec.file, rec.line, 'load', `modalities[${i}] (${m.type}): ${msg}`, { cause: e, modalityIndex: i });
        }
      }));
      errors = failures.filter((x): x is SampleError => x !== undefined);
    }
    if (errors.length) {
      summary.failed++;
      report(errors, rec.index);
    } else {
      summary.ok++;
      for (const m of rec.sample!.modalities) summary.modalities[m.type] = (summary.modalities[m.type] ?? 0) + 1;
    }
  }

  if (opts.json) {
    process.stdout.write(`${JSON.stringify(summary)}\n`);
  } else {
    const kinds = Object.entries(summary.errors).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`);
    const mods = Object.entries(summary.modalities).map(([k, n]) => `${k} ${n}`);
    const lines = [
      `${path.basename(dataset)}: ${summary.samples} samples, ${summary.ok} ok, ${summary.failed} failed${summary.loaded ? ' (loaders run)' : ''}`,
      ...(kinds.length ? [`errors by kind: ${kinds.join(', ')}`] : []),
      ...(printed < Object.values(summary.errors).reduce((a, b) => a + b, 0) ? [`(${printed} error lines printed; --max-errors ${opts.maxErrors})`] : []),
      ...(mods.length ? [`modalities in valid samples: ${mods.join(', ')}`] : []),
      `modality types checked: ${summary.modalityTypes?.join(', ') ?? 'none (no list given and no plugin registers any)'}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  }
  return summary.failed > 0 ? EXIT_FAILURES : EXIT_OK;
}

function usage(message: string): never {
  throw new CliExit(EXIT_USAGE, message);
}
