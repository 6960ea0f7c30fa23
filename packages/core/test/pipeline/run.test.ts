import 'reflect-metadata';
import { existsSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { parquetWriteBuffer } from 'hyparquet-writer';
import {
  Collator, createMultimeditron, IGNORE_TOKEN_INDEX, loadRunConfig, readRunErrors, readRunManifest, readShards, RunMismatchError,
  runEmbedding, RunStateError, selectBackend, type BaseModality, type EmbeddedSample, type EmbeddingProgress, type Multimeditron,
  type ResolvedRunConfig,
} from '@multimeditron/core';
import { makeVecDataset, REPO_ROOT, TOKENIZER_DIR, VEC_PLUGIN } from './fixtures/make-vec-dataset.mjs';

const PLACEHOLDER_ID = 128002;
let root: string;
let mm: Multimeditron;
/** One tokenizer for every run that uses the default options (building it takes about a second). */
let collator: Collator;

beforeAll(async () => {
  await selectBackend({ backend: 'wasm' });
  mm = await createMultimeditron({ plugins: [VEC_PLUGIN], backend: false });
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-run-'));
  collator = await Collator.fromFolder(TOKENIZER_DIR);
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

let n = 0;
async function fresh(options: Parameters<typeof makeVecDataset>[1] = {}) {
  const dir = path.join(root, `case-${n++}`);
  const made = await makeVecDataset(dir, options);
  return { dir, ...made, rc: await loadRunConfig(made.config), out: path.join(dir, 'out') };
}

async function readAll(out: string): Promise<EmbeddedSample[]> {
  const got: EmbeddedSample[] = [];
  for await (const s of readShards(out)) got.push(s);
  return got;
}

/** Every file of an output folder except the manifest (which holds timestamps), as bytes. */
async function outputFiles(out: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  for (const f of (await fs.readdir(out)).sort()) if (f !== 'manifest.json') files.set(f, await fs.readFile(path.join(out, f)));
  return files;
}

const BAD = { 5: 'THROW', 9: 'CRASH', 13: 'BADSHAPE', 17: 'MISSING', 21: 'JSON' } as const;

describe('runEmbedding in the main thread (workers: 0)', () => {
  let c: Awaited<ReturnType<typeof fresh>>;
  let samples: EmbeddedSample[];

  beforeAll(async () => {
    c = await fresh({ samples: 30, bad: BAD });
  });

  test('embeds every good sample once, logs every bad one, and leaks no tensor', async () => {
    const before = tf.memory().numTensors;
    const events: EmbeddingProgress[] = [];
    const summary = await runEmbedding({ mm, collator, dataset: c.dataset, runConfig: c.rc, outDir: c.out, workers: 0, onProgress: (e) => events.push(e) });
    expect(tf.memory().numTensors).toBe(before);
    expect(summary).toEqual(expect.objectContaining({
      total: 30, samples: 25, errors: 5, processed: 30, failed: 5, skipped: 0, shards: 4, complete: true, aborted: false, resumed: false, workers: 0,
    }));
    samples = await readAll(c.out);
    expect(samples.map((s) => s.sampleIndex)).toEqual([...Array(30).keys()].filter((i) => !(i in BAD)));
    expect(samples.map((s) => s.shard)).toEqual(samples.map((s) => Math.floor(s.sampleIndex / 8)));

    const errors = await readRunErrors(c.out);
    expect(errors.map((e) => [e.sampleIndex, e.line, e.code, e.stage, e.shard])).toEqual([
      [5, 6, 'E_INPUT', 'load', 0],
      [9, 10, 'E_INPUT', 'load', 1],
      [13, 14, 'E_EMBED', 'embed', 1],
      [17, 18, 'E_DATASET', 'dataset', 2],
      [21, 22, 'E_DATASET', 'dataset', 2],
    ]);
    expect(errors[0]!.file).toBe(path.join(c.dir, 'vec', 'bad-5.json'));
    expect(errors[3]!.file).toBe(c.dataset);
    expect(errors[3]!.message).toMatch(/missing-17\.json/);

    const kinds = events.map((e) => e.type);
    expect(kinds[0]).toBe('start');
    expect(kinds.filter((k) => k === 'shard')).toHaveLength(4);
    expect(kinds.filter((k) => k === 'sample-error')).toHaveLength(5);
    const last = events.filter((e) => e.type === 'progress').at(-1)!;
    expect(last).toEqual(expect.objectContaining({ done: 30, failed: 5, total: 30, etaMs: 0 }));

    const manifest = (await readRunManifest(c.out))!;
    expect(manifest).toEqual(expect.objectContaining({ complete: true, coveredUntil: 30, samples: 25, errors: 5, shardSize: 8 }));
    expect(manifest.shards.map((s) => [s.firstSample, s.endSample, s.samples, s.errors])).toEqual([[0, 8, 7, 1], [8, 16, 6, 2], [16, 24, 6, 2], [24, 30, 6, 0]]);
  });

  test('index lines: placeholder slots, masks and labels, one key per kept modality', () => {
    for (const s of samples) {
      expect(s.attentionMaskLength).toBe(s.inputIds.length);
      expect(s.labels).toHaveLength(s.inputIds.length);
      expect(s.truncated).toBe(false);
      const kind = s.sampleIndex % 4;
      expect(s.kind).toBe(kind === 1 ? 'conversations' : 'text');
      expect(s.modalities).toHaveLength(kind === 2 ? 2 : kind === 3 ? 0 : 1);
      let slots = 0;
      s.modalities.forEach((m, j) => {
        expect(m.key).toBe(`${s.sampleIndex}.${j}`);
        expect(m.modalityIndex).toBe(j);
        expect(m.shape).toEqual([m.end - m.start, 8]);
        expect(s.embeddings[j]!.shape).toEqual(m.shape);
        for (let p = m.start; p < m.end; p++) {
          expect(s.inputIds[p]).toBe(PLACEHOLDER_ID);
          expect(s.labels[p]).toBe(IGNORE_TOKEN_INDEX);
        }
        slots += m.end - m.start;
      });
      expect(s.inputIds.filter((id) => id === PLACEHOLDER_ID)).toHaveLength(slots);
      // the two-window entry (8 numbers = 2 inputs of 4) gets 2 x 3 rows
      if (kind === 2) expect(s.modalities.map((m) => m.end - m.start)).toEqual([3, 6]);
      // instruction samples are labelled on the assistant turn only
      if (kind === 1) {
        expect(s.labels.some((l) => l !== IGNORE_TOKEN_INDEX)).toBe(true);
        expect(s.labels.slice(0, s.modalities[0]!.end).every((l) => l === IGNORE_TOKEN_INDEX)).toBe(true);
      }
    }
  });

  test('stored embeddings equal the modality\'s own forward pass on the same inputs', async () => {
    const modality = await mm.modalities.fromConfig({ modelType: 'test_vec', hiddenSize: 8, maxBatchSize: 3 });
    try {
      for (const s of samples) {
        for (const m of s.modalities) {
          const line = JSON.parse((await fs.readFile(c.dataset, 'utf8')).split('\n')[s.line - 1]!);
          const values = JSON.parse(await fs.readFile(path.join(c.dir, line.modalities[m.modalityIndex].value), 'utf8')) as number[];
          const parts = modality.processor.processAll({ type: 'vec', value: values });
          const out = modality.forward(parts.map((p) => p.value));
          const expected = (await out.data()) as Float32Array;
          out.dispose();
          const got = s.embeddings[m.modalityIndex]!.data;
          expect(got.length).toBe(expected.length);
          for (let i = 0; i < got.length; i++) expect(Math.abs(got[i]! - expected[i]!)).toBeLessThanOrEqual(1e-6);
        }
      }
    } finally {
      modality.dispose();
    }
  });

  test('running it again resumes a complete run: nothing to do, same exit state', async () => {
    const before = await outputFiles(c.out);
    const summary = await runEmbedding({ mm, collator, dataset: c.dataset, runConfig: c.rc, outDir: c.out, workers: 0 });
    expect(summary).toEqual(expect.objectContaining({ processed: 0, samples: 25, errors: 5, complete: true, resumed: true, skipped: 30 }));
    expect(await outputFiles(c.out)).toEqual(before);
  });

  test('a changed config or dataset is refused; the worker count is not part of the identity; overwrite starts again', async () => {
    const changed: ResolvedRunConfig = { ...c.rc, config: { ...c.rc.config, batch: { ...c.rc.config.batch, shardSize: 9 } }, batch: { ...c.rc.batch, shardSize: 9 } };
    const err = await runEmbedding({ mm, collator, dataset: c.dataset, runConfig: changed, outDir: c.out, workers: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RunMismatchError);
    expect((err as RunMismatchError).differences).toEqual(['config']);
    expect((err as RunMismatchError).code).toBe('E_RUN_MISMATCH');

    const other = path.join(c.dir, 'other.jsonl');
    await fs.writeFile(other, `${await fs.readFile(c.dataset, 'utf8')}{"text": "one more", "modalities": []}\n`);
    const err2 = await runEmbedding({ mm, collator, dataset: other, runConfig: c.rc, outDir: c.out, workers: 0 }).catch((e: unknown) => e);
    expect((err2 as RunMismatchError).differences).toEqual(['dataset']);

    const workersChanged: ResolvedRunConfig = { ...c.rc, config: { ...c.rc.config, batch: { ...c.rc.config.batch, workers: 1 } } };
    await expect(runEmbedding({ mm, collator, dataset: c.dataset, runConfig: workersChanged, outDir: c.out, workers: 0 })).resolves.toEqual(expect.objectContaining({ complete: true, processed: 0 }));

    const again = await runEmbedding({ mm, collator, dataset: other, runConfig: c.rc, outDir: c.out, workers: 0, overwrite: true });
    expect(again).toEqual(expect.objectContaining({ total: 31, samples: 26, errors: 5, resumed: false, processed: 31 }));
  });
});

describe('interruption and resume', () => {
  test('an aborted run keeps its committed shards; the resumed run writes exactly what an uninterrupted one does', async () => {
    const c = await fresh({ samples: 40, bad: { 4: 'THROW', 9: 'MISSING', 30: 'BADSHAPE' } });
    const reference = path.join(c.dir, 'reference');
    await runEmbedding({ mm, collator, dataset: c.dataset, runConfig: c.rc, outDir: reference, workers: 0 });

    const controller = new AbortController();
    const first = await runEmbedding({
      mm, collator, dataset: c.dataset, runConfig: c.rc, outDir: c.out, workers: 0, signal: controller.signal,
      onProgress: (e) => {
        if (e.type === 'shard' && e.shard === 1) controller.abort();
      },
    });
    expect(first).toEqual(expect.objectContaining({ aborted: true, complete: false, shards: 2 }));
    const partial = (await readRunManifest(c.out))!;
    expect(partial.coveredUntil).toBe(16);
    expect((await fs.readdir(c.out)).filter((f) => f.includes('.tmp'))).toEqual([]);
    // leftovers of a killed writer, and an uncommitted shard whose manifest entry never got written
    await fs.writeFile(path.join(c.out, 'shard-00002.safetensors.data.123.tmp'), 'junk');
    await fs.writeFile(path.join(c.out, 'shard-00002.jsonl'), '{"sampleIndex": 16}\n');
    await fs.appendFile(path.join(c.out, 'errors.jsonl'), `${JSON.stringify({ sampleIndex: 17, line: 18, code: 'E_X', message: 'stale', stage: 'load', shard: 2 })}\n`);

    const events: EmbeddingProgress[] = [];
    const second = await runEmbedding({ mm, collator, dataset: c.dataset, runConfig: c.rc, outDir: c.out, workers: 0, onProgress: (e) => events.push(e) });
    expect(events[0]).toEqual(expect.objectContaining({ type: 'start', skipped: 16, resumed: true }));
    expect(second).toEqual(expect.objectContaining({ resumed: true, skipped: 16, processed: 24, complete: true, samples: 37, errors: 3 }));
    expect(await outputFiles(c.out)).toEqual(await outputFiles(reference));
    const idx = (await readAll(c.out)).map((s) => s.sampleIndex);
    expect(new Set(idx).size).toBe(idx.length);
    expect(idx).toHaveLength(37);
  });

  test('a damaged committed shard is refused', async () => {
    const c = await fresh({ samples: 12 });
    const controller = new AbortController();
    await runEmbedding({
      mm, collator, dataset: c.dataset, runConfig: c.rc, outDir: c.out, workers: 0, signal: controller.signal,
      onProgress: (e) => e.type === 'shard' && controller.abort(),
    });
    await fs.truncate(path.join(c.out, 'shard-00000.safetensors'), 100);
    await expect(runEmbedding({ mm, collator, dataset: c.dataset, runConfig: c.rc, outDir: c.out, workers: 0 })).rejects.toBeInstanceOf(RunStateError);
  });

  test('an output folder holding shard files but no manifest is refused unless overwrite', async () => {
    const c = await fresh({ samples: 4 });
    await fs.mkdir(c.out, { recursive: true });
    await fs.writeFile(path.join(c.out, 'shard-00000.jsonl'), '');
    await fs.writeFile(path.join(c.out, 'notes.txt'), 'mine');
    await expect(runEmbedding({ mm, collator, dataset: c.dataset, runConfig: c.rc, outDir: c.out, workers: 0 })).rejects.toBeInstanceOf(RunStateError);
    await expect(runEmbedding({ mm, collator, dataset: c.dataset, runConfig: c.rc, outDir: c.out, workers: 0, overwrite: true })).resolves.toEqual(expect.objectContaining({ samples: 4 }));
    expect(await fs.readFile(path.join(c.out, 'notes.txt'), 'utf8')).toBe('mine');
  });
});

describe('memory and batching', () => {
  test('no tensor leaks across a multi-batch run with a host-built modality', async () => {
    const c = await fresh({ samples: 26, batch: { batchSize: 3, shardSize: 9 } });
    const modality: BaseModality = await mm.modalities.fromConfig({ modelType: 'test_vec', hiddenSize: 8, maxBatchSize: 3 });
    try {
      const before = tf.memory().numTensors;
      let batches = 0;
      const summary = await runEmbedding({
        mm, collator, dataset: c.dataset, runConfig: c.rc, outDir: c.out, workers: 0, modalities: new Map([['vec', modality]]),
        onProgress: (e) => {
          if (e.type === 'progress') {
            batches++;
            expect(tf.memory().numTensors).toBe(before);
          }
        },
      });
      expect(batches).toBe(9); // 3 + 3 + 3 in each full shard of 9, then 3 + 3 + 2 over the last 8
      expect(summary.samples).toBe(26);
      expect(tf.memory().numTensors).toBe(before);
      expect(modality.encoderVariables().get('weight')!.isDisposed).toBe(false);
    } finally {
      modality.dispose();
    }
  });

  test('maxLength truncation drops the modalities it cuts and keeps the sample', async () => {
    const c = await fresh({ samples: 3, batch: { maxLength: 12 } });
    await runEmbedding({ mm, dataset: c.dataset, runConfig: c.rc, outDir: c.out, workers: 0 });
    const byIndex = new Map((await readAll(c.out)).map((s) => [s.sampleIndex, s]));
    const two = byIndex.get(2)!;
    expect(two.truncated).toBe(true);
    expect(two.inputIds.length).toBeLessThanOrEqual(12);
    expect(two.modalities.map((m) => m.modalityIndex)).toEqual([0]);
    expect(two.embeddings).toHaveLength(1);
  });

  test('an empty dataset completes with no shard', async () => {
    const c = await fresh({ samples: 0 });
    const summary = await runEmbedding({ mm, collator, dataset: c.dataset, runConfig: c.rc, outDir: c.out, workers: 0 });
    expect(summary).toEqual(expect.objectContaining({ total: 0, samples: 0, shards: 0, complete: true }));
    expect(await readAll(c.out)).toEqual([]);
  });
});

describe('Parquet datasets', () => {
  test('a Parquet file (JSON-string columns, several row groups) gives the same samples and embeddings as its JSONL', async () => {
    const c = await fresh({ samples: 13, bad: { 5: 'THROW' } });
    const rows = (await fs.readFile(c.dataset, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const file = path.join(c.dir, 'dataset.parquet');
    const col = (k: string) => rows.map((r) => (r[k] === undefined ? null : typeof r[k] === 'string' ? r[k] : JSON.stringify(r[k])));
    await fs.writeFile(file, Buffer.from(parquetWriteBuffer({
      columnData: ['text', 'conversations', 'modalities'].map((name) => ({ name, data: col(name), type: 'STRING' as const })),
      rowGroupSize: 5,
    })));
    const fromJsonl = await runEmbedding({ mm, collator, dataset: c.dataset, runConfig: c.rc, outDir: c.out, workers: 0 });
    const pq = path.join(c.dir, 'out-parquet');
    const fromParquet = await runEmbedding({ mm, collator, dataset: file, runConfig: c.rc, outDir: pq, workers: 0 });
    expect(fromParquet).toEqual(expect.objectContaining({ total: 13, samples: fromJsonl.samples, errors: 1, complete: true }));
    const a = await readAll(c.out);
    const b = await readAll(pq);
    expect(b.map((s) => [s.sampleIndex, s.line, s.inputIds])).toEqual(a.map((s) => [s.sampleIndex, s.line, s.inputIds]));
    b.forEach((s, i) => s.embeddings.forEach((e, j) => expect(Array.from(e.data)).toEqual(Array.from(a[i]!.embeddings[j]!.data))));
  });
});

describe('runEmbedding with worker threads (built dist)', () => {
  const workerScript = path.join(REPO_ROOT, 'packages', 'core', 'dist', 'pipeline', 'internal', 'worker.js');

  test('the worker script is built (npx tsc -b packages/core)', () => {
    expect(existsSync(workerScript)).toBe(true);
  });

  test('workers give the same bytes as the main thread; a crashing input fails alone and the run goes on', async () => {
    const c = await fresh({ samples: 24, bad: { 2: 'THROW', 9: 'CRASH' } });
    const inProcess = path.join(c.dir, 'in-process');
    await runEmbedding({ mm, collator, dataset: c.dataset, runConfig: c.rc, outDir: inProcess, workers: 0 });
    const summary = await runEmbedding({ mm, collator, dataset: c.dataset, runConfig: c.rc, outDir: c.out, workers: 2 });
    expect(summary).toEqual(expect.objectContaining({ workers: 2, samples: 22, errors: 2, complete: true }));
    expect(summary.workerCrashes).toBeGreaterThanOrEqual(1);
    const errors = await readRunErrors(c.out);
    expect(errors.map((e) => [e.sampleIndex, e.code, e.stage])).toEqual([[2, 'E_INPUT', 'load'], [9, 'E_WORKER', 'worker']]);
    const a = await outputFiles(c.out);
    const b = await outputFiles(inProcess);
    a.delete('errors.jsonl');
    b.delete('errors.jsonl');
    expect(a).toEqual(b);
  });

  test('a sample that hangs its worker past taskTimeoutMs is recorded as E_WORKER; the others are embedded', async () => {
    const c = await fresh({ samples: 8, bad: { 4: 'HANG' } });
    const summary = await runEmbedding({ mm, collator, dataset: c.dataset, runConfig: c.rc, outDir: c.out, workers: 2, taskTimeoutMs: 400 });
    expect(summary).toEqual(expect.objectContaining({ samples: 7, errors: 1, complete: true }));
    const errors = await readRunErrors(c.out);
    expect(errors).toEqual([expect.objectContaining({ sampleIndex: 4, code: 'E_WORKER', stage: 'worker', message: expect.stringMatching(/longer than 400 ms/) })]);
  });

  test('in-memory plugins cannot run in workers: a clear error', async () => {
    const { VecModality, FsVecLoader } = (await import(path.join(VEC_PLUGIN, 'index.js'))) as Record<string, unknown>;
    const host = await createMultimeditron({ plugins: [{ name: 'inline', apiVersion: 1, modalities: [VecModality as never], loaders: [FsVecLoader as never] }], backend: false });
    const c = await fresh({ samples: 2 });
    await expect(runEmbedding({ mm: host, dataset: c.dataset, runConfig: c.rc, outDir: c.out, workers: 1 })).rejects.toThrow(/worker threads cannot load it/);
  });
});
