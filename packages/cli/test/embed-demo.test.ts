import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readRunManifest, readShards } from '@multimeditron/core';
import { REPO_ROOT } from '../../../test/helpers/fixtures.js';
import { runCli } from './helpers.js';

/** The README's main-job command on the built-in demo: no network, random-weight models made by a script. */
describe('the built-in demo (npm run demo)', () => {
  let out: string;
  beforeAll(async () => {
    out = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-demo-'));
  });
  afterAll(async () => {
    await fs.rm(out, { recursive: true, force: true });
  });

  test('make-demo-models writes Hugging Face folders labelled as random', async () => {
    const models = path.join(out, 'models');
    const r = spawnSync(process.execPath, [path.join(REPO_ROOT, 'examples', 'make-demo-models.mjs'), '--out', models], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    for (const m of ['clip-demo', 'whisper-demo']) {
      expect((await fs.readdir(path.join(models, m))).sort()).toEqual(['config.json', 'model.safetensors', 'preprocessor_config.json']);
      const cfg = JSON.parse(await fs.readFile(path.join(models, m, 'config.json'), 'utf8'));
      expect(cfg._random_weights).toBe(true);
    }
    expect(await fs.readFile(path.join(models, 'README.md'), 'utf8')).toMatch(/random/i);
    // the same seed gives the same bytes
    const again = path.join(out, 'models-again');
    spawnSync(process.execPath, [path.join(REPO_ROOT, 'examples', 'make-demo-models.mjs'), '--out', again]);
    const a = await fs.readFile(path.join(models, 'clip-demo', 'model.safetensors'));
    const b = await fs.readFile(path.join(again, 'clip-demo', 'model.safetensors'));
    expect(a.equals(b)).toBe(true);
  });

  test('embed on examples/demo exits 0 with every sample: 49 image rows and 1500 audio rows of 64', async () => {
    const gen = spawnSync(process.execPath, [path.join(REPO_ROOT, 'examples', 'make-demo-models.mjs'), '--if-missing'], { encoding: 'utf8' });
    expect(gen.status).toBe(0);
    const dir = path.join(out, 'embeddings');
    const r = runCli([
      'embed', path.join(REPO_ROOT, 'examples', 'demo', 'dataset.jsonl'), '--config', path.join(REPO_ROOT, 'examples', 'demo', 'run.json'),
      '--out', dir, '--progress', 'none', '--json',
    ], { env: { MULTIMEDITRON_BACKEND: 'wasm', HF_HUB_OFFLINE: '1' } });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(expect.objectContaining({ total: 8, samples: 8, errors: 0, complete: true }));
    const shapes: string[] = [];
    for await (const s of readShards(dir)) {
      s.modalities.forEach((m, j) => shapes.push(`${s.sampleIndex}.${j}:${m.type}:${s.embeddings[j]!.shape.join('x')}`));
      for (const e of s.embeddings) expect(e.data.every(Number.isFinite)).toBe(true);
    }
    expect(shapes).toEqual([
      '0.0:image:49x64', '1.0:image:49x64', '2.0:audio:1500x64', '3.0:audio:1500x64',
      '4.0:image:49x64', '4.1:audio:1500x64', '5.0:image:49x64', '5.1:image:49x64',
    ]);
    const m = (await readRunManifest(dir))!;
    expect(m.plugins.map((p) => p.name).sort()).toEqual(['@multimeditron/plugin-audio', '@multimeditron/plugin-image']);
  });

  test('the same run config with hub ids embeds from the Hugging Face cache, offline', async () => {
    const gen = spawnSync(process.execPath, [path.join(REPO_ROOT, 'examples', 'make-demo-models.mjs'), '--if-missing'], { encoding: 'utf8' });
    expect(gen.status).toBe(0);
    // the layout `huggingface-cli download` writes: models--org--name/{refs/main, snapshots/<commit>/}
    const cache = path.join(out, 'hf', 'hub');
    const commit = 'a'.repeat(40);
    for (const [id, folder] of [['demo-org/clip-demo', 'clip-demo'], ['demo-org/whisper-demo', 'whisper-demo']] as const) {
      const repo = path.join(cache, `models--${id.replace('/', '--')}`);
      await fs.mkdir(path.join(repo, 'refs'), { recursive: true });
      await fs.writeFile(path.join(repo, 'refs', 'main'), commit);
      await fs.cp(path.join(REPO_ROOT, 'examples', 'demo', 'models', folder), path.join(repo, 'snapshots', commit), { recursive: true });
    }
    const cfg = JSON.parse(await fs.readFile(path.join(REPO_ROOT, 'examples', 'demo', 'run.json'), 'utf8'));
    cfg.modalities[0].clipName = 'demo-org/clip-demo';
    cfg.modalities[1].whisperName = 'demo-org/whisper-demo';
    cfg.tokenizer.path = path.join(REPO_ROOT, 'node_modules', '@lenml', 'tokenizer-llama3_1', 'models');
    const config = path.join(out, 'hub-run.json');
    await fs.writeFile(config, JSON.stringify(cfg));
    const dir = path.join(out, 'hub-embeddings');
    const r = runCli([
      'embed', path.join(REPO_ROOT, 'examples', 'demo', 'dataset.jsonl'), '--config', config, '--out', dir, '--progress', 'none', '--json',
    ], { env: { MULTIMEDITRON_BACKEND: 'wasm', HF_HUB_OFFLINE: '1', HF_HUB_CACHE: cache } });
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(expect.objectContaining({ samples: 8, errors: 0 }));
    // same weights, same inputs: the same embeddings as from the local folders
    const local = path.join(out, 'embeddings');
    const a = new Map<string, Float32Array>();
    for await (const s of readShards(local)) s.embeddings.forEach((e, j) => a.set(`${s.sampleIndex}.${j}`, e.data));
    let compared = 0;
    for await (const s of readShards(dir)) {
      s.embeddings.forEach((e, j) => {
        expect(Buffer.from(e.data.buffer).equals(Buffer.from(a.get(`${s.sampleIndex}.${j}`)!.buffer))).toBe(true);
        compared++;
      });
    }
    expect(compared).toBe(8);
  });
});
