import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readRunManifest, readShards, type EmbeddedSample } from '@multimeditron/core';
import { makeVecDataset } from '../../core/test/pipeline/fixtures/make-vec-dataset.mjs';
import { CLI_BIN, runCli } from './helpers.js';

const ENV = { MULTIMEDITRON_BACKEND: 'wasm' };
let root: string;
let n = 0;

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-embed-cli-'));
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

async function fresh(options: Parameters<typeof makeVecDataset>[1] = {}) {
  const dir = path.join(root, `case-${n++}`);
  const made = await makeVecDataset(dir, options);
  return { dir, ...made, out: path.join(dir, 'out') };
}

async function readAll(out: string): Promise<EmbeddedSample[]> {
  const got: EmbeddedSample[] = [];
  for await (const s of readShards(out)) got.push(s);
  return got;
}

const jsonLines = (text: string) => text.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);

describe('multimeditron embed', () => {
  test('a run with failed samples: exit 1, summary on stdout, JSON-lines progress on stderr, errors.jsonl', async () => {
    const c = await fresh({ samples: 20, bad: { 1: 'THROW', 6: 'MISSING' } });
    const r = runCli(['embed', c.dataset, '--config', c.config, '--out', c.out, '--workers', '1'], { env: ENV });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/embedded 18 of 20 samples into .*out \(3 shard\(s\)\)/);
    expect(r.stdout).toMatch(/2 sample\(s\) failed: see .*errors\.jsonl/);
    const events = jsonLines(r.stderr);
    expect(events[0]).toEqual(expect.objectContaining({ event: 'start', total: 20, skipped: 0, workers: 1 }));
    expect(events.at(-1)).toEqual(expect.objectContaining({ event: 'done', samples: 18, errors: 2, complete: true }));
    expect(events.filter((e) => e['event'] === 'shard')).toHaveLength(3);
    expect(events.filter((e) => e['event'] === 'sample-error').map((e) => (e['error'] as { sampleIndex: number }).sampleIndex)).toEqual([1, 6]);
    const errors = jsonLines(await fs.readFile(path.join(c.out, 'errors.jsonl'), 'utf8'));
    expect(errors.map((e) => [e['sampleIndex'], e['line'], e['code']])).toEqual([[1, 2, 'E_INPUT'], [6, 7, 'E_DATASET']]);
    expect(errors[0]!['file']).toBe(path.join(c.dir, 'vec', 'bad-1.json'));

    // again: nothing to do, the failures are still reported
    const again = runCli(['embed', c.dataset, '--config', c.config, '--out', c.out, '--json', '--progress', 'none'], { env: ENV });
    expect(again.status).toBe(1);
    expect(again.stderr).toBe('');
    expect(JSON.parse(again.stdout)).toEqual(expect.objectContaining({ processed: 0, samples: 18, errors: 2, resumed: true, complete: true }));
  });

  test('a clean run exits 0; relative paths in the run config resolve against its folder', async () => {
    const c = await fresh({ samples: 6 });
    const cfgDir = path.join(c.dir, 'configs');
    await fs.mkdir(cfgDir);
    const cfg = JSON.parse(await fs.readFile(c.config, 'utf8'));
    cfg.tokenizer.path = path.relative(cfgDir, cfg.tokenizer.path);
    cfg.plugins = [path.relative(cfgDir, cfg.plugins[0])].map((p) => (p.startsWith('.') ? p : `./${p}`));
    await fs.writeFile(path.join(cfgDir, 'run.json'), JSON.stringify(cfg));
    const r = runCli(['embed', c.dataset, '--config', path.join(cfgDir, 'run.json'), '--out', c.out, '--workers', '0', '--json'], { env: ENV, cwd: os.tmpdir() });
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(expect.objectContaining({ samples: 6, errors: 0, workers: 0, complete: true }));
    expect((await readAll(c.out)).map((s) => s.sampleIndex)).toEqual([0, 1, 2, 3, 4, 5]);
  });

  test.each([
    ['an invalid run config', (c: { config: string }) => ['--config', c.config], { batch: { batchSize: 0 } }, /\/batch\/batchSize: must be >= 1 \(rule: minimum\)/],
    ['an unknown modality', (c: { config: string }) => ['--config', c.config], { modalities: [{ modelType: 'no_such_modality' }] }, /\/modalities\/0: Unknown modality "no_such_modality"/],
    ['a missing config file', () => ['--config', '/nonexistent/run.json'], {}, /nonexistent\/run\.json/],
    ['bad --workers', (c: { config: string }) => ['--config', c.config, '--workers', 'two'], {}, /--workers must be an integer/],
    ['bad --progress', (c: { config: string }) => ['--config', c.config, '--progress', 'loud'], {}, /--progress must be one of/],
  ])('%s exits 2 and says what is wrong', async (_name, args, runConfig, message) => {
    const c = await fresh({ samples: 2, runConfig });
    const r = runCli(['embed', c.dataset, ...args(c), '--out', c.out], { env: ENV });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message);
  });

  test('a missing dataset, or missing required options, exit 2', async () => {
    const c = await fresh({ samples: 1 });
    const r = runCli(['embed', path.join(c.dir, 'nope.jsonl'), '--config', c.config, '--out', c.out], { env: ENV });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/dataset not found/);
    expect(runCli(['embed', c.dataset, '--config', c.config], { env: ENV }).status).toBe(2);
  });

  test('an output folder holding a run of another config is refused (exit 2) unless --overwrite', async () => {
    const c = await fresh({ samples: 4 });
    expect(runCli(['embed', c.dataset, '--config', c.config, '--out', c.out, '--workers', '0', '--progress', 'none'], { env: ENV }).status).toBe(0);
    const cfg = JSON.parse(await fs.readFile(c.config, 'utf8'));
    cfg.batch.shardSize = 3;
    await fs.writeFile(c.config, JSON.stringify(cfg));
    const r = runCli(['embed', c.dataset, '--config', c.config, '--out', c.out, '--workers', '0'], { env: ENV });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/holds a run with a different config/);
    expect(r.stderr).toMatch(/hint: .*--overwrite/);
    const o = runCli(['embed', c.dataset, '--config', c.config, '--out', c.out, '--workers', '0', '--overwrite', '--json', '--progress', 'none'], { env: ENV });
    expect(o.status).toBe(0);
    expect(JSON.parse(o.stdout)).toEqual(expect.objectContaining({ shards: 2, samples: 4 }));
  });

  test('SIGKILL after the first shard, then a re-run: every sample exactly once, the same embeddings as an uninterrupted run', async () => {
    const samples = 600;
    const c = await fresh({
      samples,
      bad: { 101: 'THROW' },
      batch: { batchSize: 8, shardSize: 64, workers: 2 },
      runConfig: { loaders: [{ loaderType: 'fs-vec', modalityType: 'vec', delayMs: 4 }] },
    });
    const reference = path.join(c.dir, 'reference');
    const ref = runCli(['embed', c.dataset, '--config', c.config, '--out', reference, '--progress', 'none'], { env: ENV });
    expect(ref.status).toBe(1);

    const child = spawn(process.execPath, [CLI_BIN, 'embed', c.dataset, '--config', c.config, '--out', c.out, '--progress', 'none'], {
      env: { ...process.env, ...ENV }, stdio: 'ignore',
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    let killedAfter = -1;
    for (let i = 0; i < 2000 && killedAfter < 0; i++) {
      const m = await readRunManifest(c.out).catch(() => undefined);
      if (m && m.shards.length >= 1) {
        child.kill('SIGKILL');
        killedAfter = m.coveredUntil;
      } else {
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    expect(await exited).toEqual({ code: null, signal: 'SIGKILL' });
    const partial = (await readRunManifest(c.out))!;
    expect(partial.complete).toBe(false);
    expect(partial.coveredUntil).toBeLessThan(samples);
    expect(killedAfter).toBeGreaterThan(0);

    const resumed = runCli(['embed', c.dataset, '--config', c.config, '--out', c.out, '--json', '--progress', 'none'], { env: ENV });
    expect(resumed.status).toBe(1);
    const summary = JSON.parse(resumed.stdout);
    expect(summary).toEqual(expect.objectContaining({ resumed: true, complete: true, samples: samples - 1, errors: 1 }));
    expect(summary.skipped).toBe(partial.coveredUntil);

    const got = await readAll(c.out);
    const want = await readAll(reference);
    const indices = got.map((s) => s.sampleIndex);
    expect(new Set(indices).size).toBe(indices.length);
    expect(indices).toEqual(want.map((s) => s.sampleIndex));
    expect(indices).toHaveLength(samples - 1);
    for (let i = 0; i < got.length; i++) {
      expect(got[i]!.inputIds).toEqual(want[i]!.inputIds);
      expect(got[i]!.embeddings.length).toBe(want[i]!.embeddings.length);
      got[i]!.embeddings.forEach((e, j) => {
        expect(Buffer.from(e.data.buffer, e.data.byteOffset, e.data.byteLength).equals(
          Buffer.from(want[i]!.embeddings[j]!.data.buffer, want[i]!.embeddings[j]!.data.byteOffset, want[i]!.embeddings[j]!.data.byteLength),
        )).toBe(true);
      });
    }
    expect((await fs.readdir(c.out)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect(jsonLines(await fs.readFile(path.join(c.out, 'errors.jsonl'), 'utf8')).map((e) => e['sampleIndex'])).toEqual([101]);
  });
});
