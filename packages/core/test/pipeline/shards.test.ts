import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  EMBEDDINGS_FORMAT, EMBEDDINGS_FORMAT_VERSION, embeddingKey, readRunErrors, readRunManifest, readShards, RunStateError,
  SafetensorsFile, shardBaseName, ShardWriter, writeRunManifest, type RunManifest,
} from '@multimeditron/core';

let dir: string;
beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-shards-'));
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const emb = (rows: number, hidden: number, seed: number) =>
  ({ data: Float32Array.from({ length: rows * hidden }, (_, i) => Math.sin(seed + i)), shape: [rows, hidden] });

function manifest(shards: RunManifest['shards']): RunManifest {
  return {
    format: EMBEDDINGS_FORMAT, formatVersion: EMBEDDINGS_FORMAT_VERSION, runId: 'r', configHash: 'c',
    dataset: { file: 'd.jsonl', sha256: 's', size: 1 }, config: {} as RunManifest['config'], modalities: [], plugins: [],
    shardSize: 4, createdAt: '', updatedAt: '', shards, coveredUntil: 4, samples: 2, errors: 0, complete: true,
  };
}

describe('ShardWriter', () => {
  test('writes a valid safetensors file (keys <sample>.<modality>, F32 [n, hidden], metadata) and its JSONL index', async () => {
    const w = await ShardWriter.open(dir, 3, { runId: 'abc' });
    await w.add({
      sampleIndex: 12, line: 14, kind: 'text', inputIds: [1, 2, 2, 3], attentionMaskLength: 4, labels: [1, -100, -100, 3], truncated: false,
      modalities: [{ modalityIndex: 0, type: 'vec', start: 1, end: 3, embedding: emb(2, 5, 1) }],
    });
    await w.add({
      sampleIndex: 13, line: 15, kind: 'conversations', inputIds: [9], attentionMaskLength: 1, labels: [-100], truncated: false, modalities: [],
    });
    // nothing under the final names before the commit
    expect((await fs.readdir(dir)).filter((f) => !f.endsWith('.tmp'))).toEqual([]);
    const files = await w.commit({ endSample: '16' });
    expect(files).toEqual({ safetensors: 'shard-00003.safetensors', index: 'shard-00003.jsonl', bytes: expect.any(Number) });
    expect((await fs.readdir(dir)).sort()).toEqual(['shard-00003.jsonl', 'shard-00003.safetensors']);
    expect((await fs.stat(path.join(dir, files.safetensors))).size).toBe(files.bytes);

    const f = await SafetensorsFile.open(path.join(dir, files.safetensors));
    try {
      expect(f.keys()).toEqual([embeddingKey(12, 0)]);
      expect(f.metadata).toEqual({ runId: 'abc', endSample: '16', samples: '2' });
      const t = await f.read('12.0');
      expect(t.dtype).toBe('F32');
      expect(t.shape).toEqual([2, 5]);
      expect(Array.from(t.data as Float32Array)).toEqual(Array.from(emb(2, 5, 1).data));
    } finally {
      await f.close();
    }
    const lines = (await fs.readFile(path.join(dir, files.index), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(lines[0]).toEqual({
      sampleIndex: 12, line: 14, kind: 'text', inputIds: [1, 2, 2, 3], attentionMaskLength: 4, labels: [1, -100, -100, 3], truncated: false,
      modalities: [{ modalityIndex: 0, type: 'vec', start: 1, end: 3, key: '12.0', shape: [2, 5] }],
    });
    expect(lines[1].modalities).toEqual([]);
  });

  test('abort leaves no file behind', async () => {
    const w = await ShardWriter.open(dir, 0, {});
    await w.add({
      sampleIndex: 0, line: 1, kind: 'text', inputIds: [1], attentionMaskLength: 1, labels: [1], truncated: false,
      modalities: [{ modalityIndex: 0, type: 'vec', start: 0, end: 1, embedding: emb(1, 2, 0) }],
    });
    await w.abort();
    expect(await fs.readdir(dir)).toEqual([]);
  });

  test('a commit that fails removes its temporary files and rethrows', async () => {
    const w = await ShardWriter.open(dir, 0, {});
    await w.add({
      sampleIndex: 0, line: 1, kind: 'text', inputIds: [1], attentionMaskLength: 1, labels: [1], truncated: false,
      modalities: [{ modalityIndex: 0, type: 'vec', start: 0, end: 1, embedding: emb(1, 2, 0) }],
    });
    // a non-empty folder where the shard file should go makes the final rename fail
    await fs.mkdir(path.join(dir, 'shard-00000.safetensors', 'blocker'), { recursive: true });
    await expect(w.commit()).rejects.toThrow();
    expect(await fs.readdir(dir)).toEqual(['shard-00000.safetensors']);
    await fs.rm(path.join(dir, 'shard-00000.safetensors'), { recursive: true });
  });

  test('a malformed embedding is refused', async () => {
    const w = await ShardWriter.open(dir, 0, {});
    await expect(w.add({
      sampleIndex: 0, line: 1, kind: 'text', inputIds: [1], attentionMaskLength: 1, labels: [1], truncated: false,
      modalities: [{ modalityIndex: 0, type: 'vec', start: 0, end: 1, embedding: { data: new Float32Array(5), shape: [2, 2] } }],
    })).rejects.toThrow(/shape/);
    await w.abort();
  });
});

describe('readShards / readRunManifest / readRunErrors', () => {
  test('reads only the shards the manifest lists, in order, with their embeddings', async () => {
    const infos: RunManifest['shards'] = [];
    for (const shard of [0, 1]) {
      const w = await ShardWriter.open(dir, shard, {});
      await w.add({
        sampleIndex: shard * 4, line: shard * 4 + 1, kind: 'text', inputIds: [1, 2], attentionMaskLength: 2, labels: [1, 2], truncated: false,
        modalities: [{ modalityIndex: 0, type: 'vec', start: 1, end: 2, embedding: emb(1, 3, shard) }],
      });
      const files = await w.commit();
      infos.push({ shard, ...files, firstSample: shard * 4, endSample: shard * 4 + 4, samples: 1, errors: shard, bytes: files.bytes });
    }
    // an uncommitted shard (files present, not in the manifest) is ignored
    const stray = await ShardWriter.open(dir, 2, {});
    await stray.commit();
    await writeRunManifest(dir, manifest(infos));
    await fs.writeFile(path.join(dir, 'errors.jsonl'), [
      { sampleIndex: 5, line: 6, code: 'E_INPUT', message: 'x', stage: 'load', shard: 1 },
      { sampleIndex: 9, line: 10, code: 'E_INPUT', message: 'y', stage: 'load', shard: 2 },
    ].map((e) => JSON.stringify(e)).join('\n'));

    const got = [];
    for await (const s of readShards(dir)) got.push(s);
    expect(got.map((s) => [s.shard, s.sampleIndex])).toEqual([[0, 0], [1, 4]]);
    expect(Array.from(got[1]!.embeddings[0]!.data)).toEqual(Array.from(emb(1, 3, 1).data));
    const light = [];
    for await (const s of readShards(dir, { embeddings: false })) light.push(s.embeddings.length);
    expect(light).toEqual([0, 0]);
    expect((await readRunErrors(dir)).map((e) => e.sampleIndex)).toEqual([5]);
    expect((await readRunManifest(dir))?.shards.map((s) => shardBaseName(s.shard))).toEqual(['shard-00000', 'shard-00001']);
  });

  test('readRunErrors skips a cut last line (a run appending, or killed while appending) but not a bad line before it', async () => {
    await writeRunManifest(dir, manifest([{ shard: 0, safetensors: 'a', index: 'b', firstSample: 0, endSample: 4, samples: 0, errors: 1, bytes: 0 }]));
    const ok = JSON.stringify({ sampleIndex: 1, line: 2, code: 'E_INPUT', message: 'x', stage: 'load', shard: 0 });
    await fs.writeFile(path.join(dir, 'errors.jsonl'), `${ok}\n{"sampleIndex": 5, "li\n\n`);
    expect((await readRunErrors(dir)).map((e) => e.sampleIndex)).toEqual([1]);
    await fs.writeFile(path.join(dir, 'errors.jsonl'), `{"sampleIndex": 5, "li\n${ok}\n`);
    await expect(readRunErrors(dir)).rejects.toThrow(/errors\.jsonl:1: not valid JSON/);
  });

  test('a folder without a manifest, or with a foreign one, is a RunStateError', async () => {
    await expect(readShards(dir).next()).rejects.toBeInstanceOf(RunStateError);
    expect(await readRunManifest(dir)).toBeUndefined();
    await fs.writeFile(path.join(dir, 'manifest.json'), '{"format": "something-else", "shards": []}');
    await expect(readRunManifest(dir)).rejects.toThrow(/not a multimeditron-embeddings manifest/);
    await fs.writeFile(path.join(dir, 'manifest.json'), '{');
    await expect(readRunManifest(dir)).rejects.toBeInstanceOf(RunStateError);
  });
});
