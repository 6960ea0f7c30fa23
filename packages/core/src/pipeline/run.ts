/**
 * `runEmbedding()`: streams a dataset through load -> process (worker threads) -> embed (main thread, batched)
 * and writes resumable shards (see {@link ./shards}).
 *
 * Shard `k` covers samples `[k * shardSize, (k + 1) * shardSize)`. Batches never straddle a shard boundary and
 * start at fixed offsets inside it, so an interrupted and resumed run forms exactly the batches an
 * uninterrupted one would, and writes the same bytes. A shard is committed (safetensors, index, errors,
 * then the manifest) once its whole range is done; a run killed at any point loses only the shard it was
 * filling, and the next run starts again at the first uncommitted shard.
 * @module
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { asyncBufferFromFile, parquetMetadataAsync } from 'hyparquet';
import type { ModalityConfigJSON } from '../config.js';
import { Collator } from '../data/collator.js';
import { datasetFormat, openDataset, type DatasetRecord } from '../data/dataset.js';
import { InputError, MultimeditronError, ShapeError } from '../errors.js';
import type { BaseModality } from '../modality.js';
import type { Multimeditron } from '../multimeditron.js';
import { canonicalJson, exists, fingerprintFile, removeTempFiles, sha256, syncDir, writeFileAtomic } from './internal/fsutil.js';
import { InProcessProcessor, WorkerPool, type SampleProcessor } from './internal/pool.js';
import { buildUnits, toTaskError, type ProcessResult, type ProcessedPart } from './internal/process.js';
import { checkRunConfig, type ResolvedRunConfig, type RunConfig } from './run-config.js';
import {
  EMBEDDINGS_FORMAT, EMBEDDINGS_FORMAT_VERSION, ERRORS_FILE, MANIFEST_FILE, RunStateError, ShardWriter, readRunManifest,
  shardBaseName, writeRunManifest, type RunErrorLine, type RunErrorStage, type RunManifest, type ShardSampleInput,
} from './shards.js';

/** The output folder belongs to another run (different config or dataset). */
export class RunMismatchError extends MultimeditronError {
  constructor(
    readonly outDir: string,
    /** What differs: `config`, `dataset`, or both. */
    readonly differences: string[],
    message: string,
  ) {
    super('E_RUN_MISMATCH', `${outDir}: ${message}`, {
      suggestions: ['Use another output folder, or pass overwrite (--overwrite) to discard the previous run.'],
    });
  }
}

/** Progress events of a run. */
export type EmbeddingProgress =
  | {
    type: 'start';
    runId: string;
    /** Samples in the dataset (undefined when it cannot be counted cheaply). */
    total: number | undefined;
    /** Samples already covered by a previous run. */
    skipped: number;
    resumed: boolean;
    workers: number;
  }
  | {
    type: 'progress';
    /** Samples handled in this session (stored + failed). */
    done: number;
    failed: number;
    total: number | undefined;
    skipped: number;
    elapsedMs: number;
    samplesPerSec: number;
    /** Estimated time left, when the total is known. */
    etaMs: number | undefined;
  }
  | { type: 'shard'; shard: number; file: string; samples: number; errors: number }
  | { type: 'sample-error'; error: RunErrorLine };

/** Options of {@link runEmbedding}. */
export interface RunEmbeddingOptions {
  /** The instance: plugins loaded and, for the forward pass, a backend selected. */
  mm: Multimeditron;
  /** The dataset file (JSONL or Parquet). */
  dataset: string;
  /** The run config (from {@link loadRunConfig} or {@link parseRunConfig}). */
  runConfig: ResolvedRunConfig;
  /** The output folder (created if needed). */
  outDir: string;
  /** Worker threads; overrides the run config's `batch.workers`. Default `min(2, cores)`; 0 = main thread. */
  workers?: number;
  /** Discard a previous run in `outDir` instead of refusing when it differs. */
  overwrite?: boolean;
  /** Receives progress events. */
  onProgress?: (event: EmbeddingProgress) => void;
  /** Stops the run: the shard being filled is dropped, committed shards stay, the summary says `aborted`. */
  signal?: AbortSignal;
  /**
   * Plugin specifiers the workers load. Default: the package folders of `mm.plugins.loaded`. Modalities or
   * loaders registered in memory (inline manifests, `mm.register`) cannot run in workers: use `workers: 0`.
   */
  workerPlugins?: string[];
  /** Worker script override (default: core's built `dist/pipeline/internal/worker.js`). */
  workerScript?: string;
  /**
   * A sample whose loading and processing takes longer than this (ms) in a worker is handled like a worker
   * crash: the worker is replaced, the sample retried alone once, then recorded as `E_WORKER`. Default 0 = no limit.
   */
  taskTimeoutMs?: number;
  /**
   * A collator built by the host (reused across runs; it must match the run config's tokenizer section and
   * `batch.maxLength`). Default: built from the run config.
   */
  collator?: Collator;
  /** Modalities already built by the host, by modality type; the others are built from the run config and disposed at the end. */
  modalities?: Map<string, BaseModality>;
}

/** What a run did. */
export interface EmbeddingSummary {
  runId: string;
  outDir: string;
  /** Samples in the dataset, when known. */
  total: number | undefined;
  /** Samples stored and samples failed, over the whole run (all sessions). */
  samples: number;
  errors: number;
  /** Samples handled in this session (stored + failed), and of those, the failed ones. */
  processed: number;
  failed: number;
  /** Samples skipped because a previous session covered them. */
  skipped: number;
  /** Committed shards. */
  shards: number;
  /** Whether a previous run was resumed. */
  resumed: boolean;
  /** The whole dataset is covered. */
  complete: boolean;
  /** The run was stopped through `signal`. */
  aborted: boolean;
  workers: number;
  /** Worker threads that died and were replaced. */
  workerCrashes: number;
  elapsedMs: number;
  samplesPerSec: number;
}

interface Item {
  rec: DatasetRecord;
  result?: Promise<ProcessResult>;
}

/** The run config part of the identity: everything but the worker count and the comments. */
function identityConfig(config: RunConfig): RunConfig {
  const c = structuredClone(config);
  delete c.batch.workers;
  delete c.description;
  delete c.$schema;
  return c;
}

async function countRecords(file: string, lines: number): Promise<number | undefined> {
  try {
    if (datasetFormat(file) === 'jsonl') return lines;
    const meta = await parquetMetadataAsync(await asyncBufferFromFile(file));
    return Number(meta.num_rows);
  } catch {
    return undefined;
  }
}

/** Our files in an output folder. */
function isRunFile(name: string): boolean {
  return name === MANIFEST_FILE || name === ERRORS_FILE || /^shard-\d{5,}\.(safetensors|jsonl)$/.test(name);
}

async function removeRunFiles(outDir: string): Promise<void> {
  for (const f of await fs.readdir(outDir)) if (isRunFile(f)) await fs.rm(path.join(outDir, f), { force: true });
}

/** Brings an output folder back to its last commit: temp files, uncommitted shards and their errors go. */
async function restoreCommitted(outDir: string, manifest: RunManifest): Promise<void> {
  await removeTempFiles(outDir);
  const committed = new Set<string>();
  for (const s of manifest.shards) {
    committed.add(s.safetensors);
    committed.add(s.index);
    const st = await fs.stat(path.join(outDir, s.safetensors)).catch(() => undefined);
    if (!st || st.size !== s.bytes || !(await exists(path.join(outDir, s.index)))) {
      throw new RunStateError(outDir, `committed shard ${s.shard} is missing or damaged (${s.safetensors}, ${s.index})`, {
        suggestions: ['Pass overwrite (--overwrite) to start the run again.'],
      });
    }
  }
  for (const f of await fs.readdir(outDir)) {
    if (/^shard-\d{5,}\.(safetensors|jsonl)$/.test(f) && !committed.has(f)) await fs.rm(path.join(outDir, f), { force: true });
  }
  const errFile = path.join(outDir, ERRORS_FILE);
  if (await exists(errFile)) {
    const shards = new Set(manifest.shards.map((s) => s.shard));
    const all = (await fs.readFile(errFile, 'utf8')).split('\n').filter((l) => l.trim());
    // lines of uncommitted shards (and a line cut by a kill, necessarily the last) go
    const kept = all.filter((l) => {
      try {
        return shards.has((JSON.parse(l) as RunErrorLine).shard);
      } catch {
        return false;
      }
    });
    if (kept.length !== all.length) await writeFileAtomic(errFile, kept.length ? `${kept.join('\n')}\n` : '');
  }
}

/** Concatenates row blocks [e_i, hidden] into one [sum e_i, hidden] array. */
function concatRows(blocks: Float32Array[], hidden: number): { data: Float32Array; shape: number[] } {
  if (blocks.length === 1) return { data: blocks[0]!, shape: [blocks[0]!.length / hidden, hidden] };
  const total = blocks.reduce((n, b) => n + b.length, 0);
  const data = new Float32Array(total);
  let o = 0;
  for (const b of blocks) {
    data.set(b, o);
    o += b.length;
  }
  return { data, shape: [total / hidden, hidden] };
}

/** Embeds one group of same-type, same-shape inputs; returns one [numEmbeddings * hidden] block per input. */
async function embedGroup(modality: BaseModality, inputs: ProcessedPart[]): Promise<Float32Array[]> {
  const out = modality.forward(inputs.map((p) => p.value));
  try {
    const [n, e, h] = out.shape;
    if (n !== inputs.length) throw new ShapeError(`forward returned ${n} rows for ${inputs.length} inputs`);
    const data = (await out.data()) as Float32Array;
    return inputs.map((p, i) => {
      if (p.numEmbeddings !== e) {
        throw new ShapeError(`the processor announced ${p.numEmbeddings} embeddings but the modality produced ${e}`);
      }
      return data.slice(i * e * h, (i + 1) * e * h);
    });
  } finally {
    out.dispose();
  }
}

/**
 * Embeds a dataset into shards in `outDir`, resuming a previous run of the same config and dataset. Per-sample
 * failures never stop the run: they are written to `errors.jsonl` and counted in the summary. Throws for
 * problems with the run itself: an invalid config ({@link ConfigValidationError}), an output folder holding
 * another run ({@link RunMismatchError}), workers that cannot start, or I/O errors on the output.
 *
 * ```ts
 * const mm = await createMultimeditron({ plugins: ['@multimeditron/plugin-image'] });
 * const runConfig = await loadRunConfig('run.json');
 * const summary = await runEmbedding({ mm, runConfig, dataset: 'data/train.jsonl', outDir: 'out/train' });
 * for await (const s of readShards('out/train')) console.log(s.sampleIndex, s.embeddings[0]!.shape);
 * ```
 */
export async function runEmbedding(options: RunEmbeddingOptions): Promise<EmbeddingSummary> {
  const started = Date.now();
  const { mm, runConfig: rc, signal } = options;
  const outDir = path.resolve(options.outDir);
  const datasetFile = path.resolve(options.dataset);
  const emit = (e: EmbeddingProgress) => options.onProgress?.(e);

  const checked = await checkRunConfig(mm, rc);
  const configHash = sha256(canonicalJson({ formatVersion: EMBEDDINGS_FORMAT_VERSION, config: identityConfig(rc.config) }));
  if (!(await fs.stat(datasetFile).then((s) => s.isFile(), () => false))) {
    throw new InputError(datasetFile, 'dataset file not found');
  }
  const fp = await fingerprintFile(datasetFile);
  const total = await countRecords(datasetFile, fp.lines);
  const runId = `${configHash.slice(0, 16)}-${fp.sha256.slice(0, 16)}`;
  const shardSize = rc.batch.shardSize;
  const batchSize = rc.batch.batchSize;

  // ---- output folder: new, resumed or refused --------------------------------------------------------------
  await fs.mkdir(outDir, { recursive: true });
  let manifest = await readRunManifest(outDir).catch((e) => {
    if (options.overwrite) return undefined;
    throw e;
  });
  if (manifest && !options.overwrite) {
    const diffs: string[] = [];
    if (manifest.configHash !== configHash) diffs.push('config');
    if (manifest.dataset.sha256 !== fp.sha256 || manifest.dataset.size !== fp.size) diffs.push('dataset');
    if (diffs.length) {
      throw new RunMismatchError(outDir, diffs,
        `holds a run with a different ${diffs.join(' and ')} (run ${manifest.runId}, this one would be ${runId}); refusing to mix them`);
    }
    await restoreCommitted(outDir, manifest);
  } else {
    if (!options.overwrite) {
      const foreign = (await fs.readdir(outDir)).filter(isRunFile);
      if (foreign.length) {
        throw new RunStateError(outDir, `holds ${foreign.join(', ')} but no ${MANIFEST_FILE}`, {
          suggestions: ['Use another output folder, or pass overwrite (--overwrite) to replace these files.'],
        });
      }
    }
    await removeRunFiles(outDir);
    await removeTempFiles(outDir);
    const now = new Date().toISOString();
    manifest = {
      format: EMBEDDINGS_FORMAT,
      formatVersion: EMBEDDINGS_FORMAT_VERSION,
      runId,
      configHash,
      dataset: { file: datasetFile, sha256: fp.sha256, size: fp.size },
      config: identityConfig(rc.config),
      modalities: checked.modalities.map((m) => ({ modelType: m.modelType, modalityType: m.modalityType, hiddenSize: m.hiddenSize })),
      plugins: mm.plugins.loaded.map((p) => ({ name: p.name, ...(p.version ? { version: p.version } : {}) })),
      shardSize,
      createdAt: now,
      updatedAt: now,
      shards: [],
      coveredUntil: 0,
      samples: 0,
      errors: 0,
      complete: false,
    };
    await writeRunManifest(outDir, manifest);
  }
  const resumed = manifest.shards.length > 0;
  const skipped = manifest.coveredUntil;
  const workers = Math.max(0, options.workers ?? rc.batch.workers ?? Math.min(2, os.availableParallelism()));
  const summary = (extra: Partial<EmbeddingSummary>): EmbeddingSummary => {
    const elapsedMs = Date.now() - started;
    const processed = extra.processed ?? 0;
    return {
      runId, outDir, total, samples: manifest!.samples, errors: manifest!.errors, processed, failed: 0, skipped,
      shards: manifest!.shards.length, resumed, complete: manifest!.complete, aborted: false, workers, workerCrashes: 0,
      elapsedMs, samplesPerSec: processed / Math.max(elapsedMs / 1000, 1e-9), ...extra,
    };
  };
  if (manifest.complete) {
    emit({ type: 'start', runId, total, skipped, resumed, workers });
    return summary({});
  }

  // ---- models, collator and the processing pool -------------------------------------------------------------
  const owned: BaseModality[] = [];
  const modalities = new Map<string, BaseModality>();
  let pool: SampleProcessor | undefined;
  let writer: ShardWriter | undefined;
  try {
    const collatorOptions = rc.collator;
    const collatorPromise = options.collator ? Promise.resolve(options.collator) : rc.config.tokenizer.path
      ? Collator.fromFolder(path.dirname(rc.tokenizerJson), collatorOptions)
      : Collator.fromFiles({ tokenizerJson: rc.tokenizerJson, ...(rc.tokenizerConfig ? { tokenizerConfig: rc.tokenizerConfig } : {}), ...collatorOptions });
    const build = async (cfg: ModalityConfigJSON) => {
      const given = options.modalities?.get(cfg.modalityType);
      if (given) return given;
      const m = await mm.modalities.fromConfig(cfg);
      owned.push(m);
      return m;
    };
    const setup = { modalities: checked.modalities, loaders: rc.loaders, allowOutsideBase: rc.dataset.allowOutsideBase };
    const startWorkers = async (): Promise<WorkerPool | undefined> => {
      if (workers === 0) return undefined;
      return WorkerPool.start({
        size: workers,
        init: { plugins: options.workerPlugins ?? workerPluginSpecs(mm, checked.modalities, rc), hostRoot: process.cwd(), ...setup },
        perWorker: Math.max(2, Math.ceil(batchSize / workers)),
        ...(options.taskTimeoutMs ? { taskTimeoutMs: options.taskTimeoutMs } : {}),
        ...(options.workerScript ? { script: options.workerScript } : {}),
      });
    };
    const [collator, built, workerPool] = await Promise.all([
      collatorPromise,
      Promise.all(checked.modalities.map(build)),
      startWorkers(),
    ]);
    checked.modalities.forEach((cfg, i) => modalities.set(cfg.modalityType, built[i]!));
    pool = workerPool ?? new InProcessProcessor(await buildUnits(mm, setup, async (cfg) => modalities.get(cfg.modalityType)!.processor));
    const hidden = checked.modalities[0]!.hiddenSize;
    const activePool = pool;

    emit({ type: 'start', runId, total, skipped, resumed, workers });
    const loopStart = Date.now();
    let done = 0;
    let failed = 0;
    let shardErrors: RunErrorLine[] = [];
    let lastIndex = skipped - 1;
    const m = manifest;

    const fail = (rec: DatasetRecord, stage: RunErrorStage, e: { code: string; message: string; file?: string }) => {
      const line: RunErrorLine = {
        sampleIndex: rec.index, line: rec.line, code: e.code, message: e.message,
        ...(e.file ? { file: e.file } : {}), stage, shard: Math.floor(rec.index / shardSize),
      };
      shardErrors.push(line);
      failed++;
      emit({ type: 'sample-error', error: line });
    };

    const commit = async (endSample: number) => {
      const w = writer!;
      writer = undefined;
      const files = await w.commit({ endSample: String(endSample) });
      if (shardErrors.length) {
        const fh = await fs.open(path.join(outDir, ERRORS_FILE), 'a');
        try {
          await fh.write(shardErrors.map((e) => `${JSON.stringify(e)}\n`).join(''));
          await fh.sync();
        } finally {
          await fh.close();
        }
      }
      m.shards.push({
        shard: w.shard, safetensors: files.safetensors, index: files.index, firstSample: w.shard * shardSize, endSample,
        samples: w.samples, errors: shardErrors.length, bytes: files.bytes,
      });
      m.coveredUntil = endSample;
      m.samples += w.samples;
      m.errors += shardErrors.length;
      m.updatedAt = new Date().toISOString();
      await writeRunManifest(outDir, m);
      emit({ type: 'shard', shard: w.shard, file: files.safetensors, samples: w.samples, errors: shardErrors.length });
      shardErrors = [];
    };

    const openShard = async (shard: number) => {
      writer = await ShardWriter.open(outDir, shard, {
        format: EMBEDDINGS_FORMAT,
        formatVersion: String(EMBEDDINGS_FORMAT_VERSION),
        runId,
        configHash,
        datasetSha256: fp.sha256,
        shard: String(shard),
        firstSample: String(shard * shardSize),
        hiddenSize: String(hidden),
      });
    };

    const processBatch = async (items: Item[]) => {
      const shard = Math.floor(items[0]!.rec.index / shardSize);
      if (writer && writer.shard !== shard) await commit(writer.shard * shardSize + shardSize);
      if (!writer) await openShard(shard);
      const results = await Promise.all(items.map((it) => it.result));

      // collate each sample (unpadded)
      interface Ok {
        rec: DatasetRecord;
        entries: ProcessedPart[][];
        encoded: ReturnType<Collator['encode']>;
        blocks: Float32Array[][][];
        failed?: boolean;
      }
      const ok: Ok[] = [];
      items.forEach((it, i) => {
        const rec = it.rec;
        if (rec.error || !rec.sample) {
          const err = rec.error;
          fail(rec, 'dataset', { code: err?.code ?? 'E_DATASET', message: err?.message ?? 'invalid sample', file: err?.file ?? rec.file });
          return;
        }
        const r = results[i]!;
        if (!r.ok) {
          fail(rec, r.error.stage, r.error);
          return;
        }
        try {
          const numEmbeddings = r.entries.map((parts) => parts.reduce((n, p) => n + p.numEmbeddings, 0));
          const encoded = collator.encode(rec.sample, numEmbeddings);
          ok.push({ rec, entries: r.entries, encoded, blocks: r.entries.map((parts) => parts.map(() => [])) });
        } catch (e) {
          fail(rec, 'collate', toTaskError(e, 'collate'));
        }
      });

      // forward: every part of every kept modality, grouped by type and input shape
      const groups = new Map<string, Array<{ s: Ok; entry: number; part: number; p: ProcessedPart }>>();
      for (const s of ok) {
        for (const r of s.encoded.modalityRanges) {
          s.entries[r.modalityIndex]!.forEach((p, part) => {
            const key = `${r.type}\u0000${p.value.shape.join(',')}`;
            let g = groups.get(key);
            if (!g) groups.set(key, (g = []));
            g.push({ s, entry: r.modalityIndex, part, p });
          });
        }
      }
      for (const [key, g] of groups) {
        const modality = modalities.get(key.split('\u0000')[0]!)!;
        let outs: Array<Float32Array | Error>;
        try {
          outs = await embedGroup(modality, g.map((x) => x.p));
        } catch {
          // isolate the culprit: embed one by one
          outs = [];
          for (const x of g) {
            try {
              outs.push((await embedGroup(modality, [x.p]))[0]!);
            } catch (e) {
              outs.push(e as Error);
            }
          }
        }
        g.forEach((x, i) => {
          const o = outs[i]!;
          if (x.s.failed) return;
          if (o instanceof Error) {
            x.s.failed = true;
            fail(x.s.rec, 'embed', toTaskError(o, 'embed'));
          } else {
            x.s.blocks[x.entry]![x.part] = [o];
          }
        });
      }

      for (const s of ok) {
        if (s.failed) continue;
        let input: ShardSampleInput;
        try {
          input = {
            sampleIndex: s.rec.index,
            line: s.rec.line,
            kind: typeof s.rec.sample!.text === 'string' ? 'text' : 'conversations',
            inputIds: Array.from(s.encoded.inputIds),
            attentionMaskLength: s.encoded.inputIds.length,
            labels: Array.from(s.encoded.labels),
            truncated: s.encoded.truncated,
            modalities: s.encoded.modalityRanges.map((r) => {
              const emb = concatRows(s.blocks[r.modalityIndex]!.map((b) => b[0]!), hidden);
              if (emb.shape[0] !== r.end - r.start) {
                throw new ShapeError(`modality ${r.modalityIndex} has ${emb.shape[0]} embedding rows for ${r.end - r.start} slots`);
              }
              return { modalityIndex: r.modalityIndex, type: r.type, start: r.start, end: r.end, embedding: emb };
            }),
          };
        } catch (e) {
          fail(s.rec, 'embed', toTaskError(e, 'embed'));
          continue;
        }
        await writer!.add(input);
      }
      done += items.length;
      lastIndex = items[items.length - 1]!.rec.index;
      const elapsedMs = Date.now() - loopStart;
      const rate = done / Math.max(elapsedMs / 1000, 1e-3);
      emit({
        type: 'progress', done, failed, total, skipped, elapsedMs, samplesPerSec: rate,
        etaMs: total === undefined ? undefined : (Math.max(0, total - skipped - done) / Math.max(rate, 1e-9)) * 1000,
      });
    };

    // ---- the stream: submit ahead, embed in fixed batches ----------------------------------------------------
    const keyOf = (index: number) => {
      const shard = Math.floor(index / shardSize);
      return `${shard}:${Math.floor((index - shard * shardSize) / batchSize)}`;
    };
    const lookahead = activePool.concurrency + batchSize;
    const window: Item[] = [];
    const leadingBatch = (): number => {
      const k = keyOf(window[0]!.rec.index);
      let n = 0;
      while (n < window.length && keyOf(window[n]!.rec.index) === k) n++;
      return n;
    };
    const dataset = openDataset(datasetFile, {
      attachmentToken: rc.collator.attachmentToken!,
      modalityTypes: checked.modalities.map((x) => x.modalityType),
      allowOutsideBase: rc.dataset.allowOutsideBase,
      startIndex: skipped,
    });
    let aborted = false;
    for await (const rec of dataset) {
      if (signal?.aborted) {
        aborted = true;
        break;
      }
      const result = rec.sample
        ? activePool.process({ sampleIndex: rec.index, line: rec.line, baseDir: rec.baseDir, modalities: rec.sample.modalities })
        : undefined;
      // A pool that became unusable rejects; the rejection is awaited (and rethrown) when this item's batch is
      // processed. Mark it handled now so that items waiting in the window do not crash the process as
      // unhandled rejections before the run's cleanup runs.
      result?.catch(() => {});
      window.push({ rec, ...(result ? { result } : {}) });
      for (;;) {
        const n = leadingBatch();
        if (n === window.length || window.length < n + lookahead) break;
        await processBatch(window.splice(0, n));
        if (signal?.aborted) break;
      }
    }
    if (signal?.aborted) aborted = true;
    while (!aborted && window.length) {
      await processBatch(window.splice(0, leadingBatch()));
      if (signal?.aborted) aborted = true;
    }
    if (!aborted) {
      if (writer) await commit(lastIndex + 1);
      m.complete = true;
      m.coveredUntil = Math.max(m.coveredUntil, lastIndex + 1);
      m.updatedAt = new Date().toISOString();
      await writeRunManifest(outDir, m);
    }
    const crashes = activePool instanceof WorkerPool ? activePool.crashes : 0;
    const elapsedMs = Date.now() - started;
    return summary({
      processed: done, failed, aborted, workerCrashes: crashes, elapsedMs,
      samplesPerSec: done / Math.max((Date.now() - loopStart) / 1000, 1e-9),
    });
  } finally {
    await (writer as ShardWriter | undefined)?.abort();
    await pool?.close();
    for (const mod of owned) mod.dispose();
    await syncDir(outDir);
  }
}

/** The plugin specifiers a worker needs: the package folders of the plugins that registered the run's names. */
function workerPluginSpecs(mm: Multimeditron, modalities: ModalityConfigJSON[], rc: ResolvedRunConfig): string[] {
  const needed = new Set<string>();
  const sourceOf = (kind: 'modality' | 'loader', name: string) => {
    const src = kind === 'modality' ? mm.modalityRegistry.sourceOf(name) : mm.loaderRegistry.sourceOf(name);
    if (src !== undefined) needed.add(src);
  };
  for (const m of modalities) sourceOf('modality', m.modelType);
  for (const l of rc.loaders) sourceOf('loader', l.loaderType);
  for (const m of modalities) {
    for (const n of [`fs-${m.modalityType}`, `raw-${m.modalityType}`]) if (mm.loaderRegistry.has(n)) sourceOf('loader', n);
  }
  const specs: string[] = [];
  for (const src of needed) {
    const p = mm.plugins.loaded.find((x) => x.name === src);
    if (!p?.root) {
      throw new MultimeditronError('E_CONFIG', `"${src}" is registered in memory, so worker threads cannot load it`, {
        suggestions: ['Run with workers: 0 (--workers 0), or load it as a plugin package.'],
      });
    }
    specs.push(p.root);
  }
  return specs;
}

