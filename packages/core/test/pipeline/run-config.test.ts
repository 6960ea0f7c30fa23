import 'reflect-metadata';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  checkRunConfig, ConfigValidationError, createMultimeditron, DEFAULT_ATTACHMENT_TOKEN, loadRunConfig, parseRunConfig,
  type Multimeditron,
} from '@multimeditron/core';
import { TOKENIZER_DIR, VEC_PLUGIN } from './fixtures/make-vec-dataset.mjs';

let dir: string;
let mm: Multimeditron;

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-runcfg-'));
  mm = await createMultimeditron({ plugins: [VEC_PLUGIN], backend: false });
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

const base = () => ({
  modalities: [{ modelType: 'test_vec', hiddenSize: 8 }],
  loaders: [{ loaderType: 'fs-vec', modalityType: 'vec' }],
  tokenizer: { path: TOKENIZER_DIR },
});

function issuesOf(fn: () => unknown): Array<{ path: string; rule: string }> {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigValidationError);
    return (e as ConfigValidationError).issues.map(({ path: p, rule }) => ({ path: p, rule }));
  }
  throw new Error('expected a ConfigValidationError');
}

async function asyncIssuesOf(p: Promise<unknown>): Promise<Array<{ path: string; rule: string }>> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigValidationError);
    return (e as ConfigValidationError).issues.map(({ path: q, rule }) => ({ path: q, rule }));
  }
  throw new Error('expected a ConfigValidationError');
}

describe('run config: parsing and path resolution', () => {
  test('relative paths resolve against the config file folder; hub ids and package names stay', async () => {
    const cfgDir = path.join(dir, 'configs', 'nested');
    await fs.mkdir(cfgDir, { recursive: true });
    const file = path.join(cfgDir, 'run.json');
    await fs.writeFile(file, JSON.stringify({
      plugins: ['./plugins/mine', '@multimeditron/plugin-image'],
      modalities: [
        { modelType: 'meditron_clip', clipName: './models/clip', hiddenSize: 64 },
        { modelType: 'meditron_whisper', whisperName: 'openai/whisper-tiny', hiddenSize: 64 },
      ],
      loaders: [{ loaderType: 'fs-image', modalityType: 'image', basePath: 'images' }],
      tokenizer: { tokenizerJson: '../tok/tokenizer.json', tokenizerConfig: '../tok/tokenizer_config.json' },
    }));
    const rc = await loadRunConfig(file);
    expect(rc.file).toBe(file);
    expect(rc.baseDir).toBe(cfgDir);
    expect(rc.plugins).toEqual([path.join(cfgDir, 'plugins/mine'), '@multimeditron/plugin-image']);
    expect(rc.modalities[0]!['clipName']).toBe(path.join(cfgDir, 'models/clip'));
    expect(rc.modalities[1]!['whisperName']).toBe('openai/whisper-tiny');
    expect(rc.loaders[0]!['basePath']).toBe(path.join(cfgDir, 'images'));
    expect(rc.tokenizerJson).toBe(path.join(dir, 'configs', 'tok', 'tokenizer.json'));
    expect(rc.tokenizerConfig).toBe(path.join(dir, 'configs', 'tok', 'tokenizer_config.json'));
    // the config as written is kept for the run's identity
    expect(rc.config.modalities[0]!['clipName']).toBe('./models/clip');
  });

  test('defaults: batch, attachment token, dataset; a tokenizer folder gives both files', () => {
    const rc = parseRunConfig(base(), dir);
    expect(rc.batch).toEqual({ batchSize: 8, shardSize: 1000 });
    expect(rc.collator.attachmentToken).toBe(DEFAULT_ATTACHMENT_TOKEN);
    expect(rc.dataset).toEqual({ allowOutsideBase: false });
    expect(rc.tokenizerJson).toBe(path.join(TOKENIZER_DIR, 'tokenizer.json'));
    expect(rc.tokenizerConfig).toBe(path.join(TOKENIZER_DIR, 'tokenizer_config.json'));
  });

  test('batch.maxLength and the tokenizer options reach the collator options', () => {
    const rc = parseRunConfig({
      ...base(),
      tokenizer: { path: TOKENIZER_DIR, modalityStartToken: '<|start_header_id|>', addSpecialTokens: false },
      batch: { maxLength: 64, workers: 0 },
    }, dir);
    expect(rc.collator).toEqual({
      attachmentToken: DEFAULT_ATTACHMENT_TOKEN, modalityStartToken: '<|start_header_id|>', addSpecialTokens: false, maxLength: 64,
    });
    expect(rc.batch.workers).toBe(0);
  });

  test.each([
    ['a batch size of 0', { batch: { batchSize: 0 } }, '/batch/batchSize', 'minimum'],
    ['a non-integer shard size', { batch: { shardSize: 2.5 } }, '/batch/shardSize', 'type'],
    ['negative workers', { batch: { workers: -1 } }, '/batch/workers', 'minimum'],
    ['an unknown top-level key', { batchSize: 3 }, '/batchSize', 'additionalProperties'],
    ['an unknown batch key', { batch: { shards: 3 } }, '/batch/shards', 'additionalProperties'],
    ['no modalities', { modalities: [] }, '/modalities', 'minItems'],
    ['a modality without modelType', { modalities: [{ hiddenSize: 3 }] }, '/modalities/0/modelType', 'required'],
    ['a loader without loaderType', { loaders: [{ modalityType: 'vec' }] }, '/loaders/0/loaderType', 'required'],
    ['plugins that are not strings', { plugins: [3] }, '/plugins/0', 'type'],
  ])('%s is reported with its JSON path and rule', (_name, patch, p, rule) => {
    expect(issuesOf(() => parseRunConfig({ ...base(), ...patch }, dir))).toContainEqual({ path: p, rule });
  });

  test('a tokenizer needs a path or tokenizer.json, not both', () => {
    expect(issuesOf(() => parseRunConfig({ ...base(), tokenizer: {} }, dir)).map((i) => i.rule)).toContain('oneOf');
    expect(issuesOf(() => parseRunConfig({ ...base(), tokenizer: { path: 'a', tokenizerJson: 'b' } }, dir)).map((i) => i.rule)).toContain('oneOf');
  });

  test('two loaders for one modality type are refused', () => {
    const cfg = { ...base(), loaders: [{ loaderType: 'fs-vec', modalityType: 'vec' }, { loaderType: 'raw-vec', modalityType: 'vec' }] };
    expect(issuesOf(() => parseRunConfig(cfg, dir))).toContainEqual({ path: '/loaders/1/modalityType', rule: 'unique' });
  });

  test('a missing or unparsable file is a ConfigValidationError naming the file', async () => {
    await expect(loadRunConfig(path.join(dir, 'nope.json'))).rejects.toThrow(/nope\.json/);
    const bad = path.join(dir, 'bad.json');
    await fs.writeFile(bad, '{ "modalities": [');
    await expect(loadRunConfig(bad)).rejects.toBeInstanceOf(ConfigValidationError);
  });
});

describe('run config: checks against the registries', () => {
  test('a valid config passes and gives the modality configs with their defaults', async () => {
    const checked = await checkRunConfig(mm, parseRunConfig(base(), dir));
    expect(checked.modalities).toEqual([expect.objectContaining({ modelType: 'test_vec', modalityType: 'vec', hiddenSize: 8, maxBatchSize: 32, inputSize: 4, numEmbeddings: 3 })]);
  });

  test('every problem is reported at once, with paths into the run config', async () => {
    const rc = parseRunConfig({
      modalities: [{ modelType: 'test_vec', hiddenSize: 8, inputSize: 0 }, { modelType: 'nope' }],
      loaders: [{ loaderType: 'fs-nothing', modalityType: 'vec' }, { loaderType: 'fs-vec', modalityType: 'image' }],
      tokenizer: { tokenizerJson: './missing/tokenizer.json' },
    }, dir);
    const issues = await asyncIssuesOf(checkRunConfig(mm, rc));
    expect(issues).toEqual(expect.arrayContaining([
      { path: '/modalities/0/inputSize', rule: 'minimum' },
      { path: '/modalities/1', rule: 'registered' },
      { path: '/loaders/0', rule: 'registered' },
      { path: '/loaders/1', rule: 'valid' },
      { path: '/loaders/1/modalityType', rule: 'modality' },
      { path: '/tokenizer/tokenizerJson', rule: 'file' },
    ]));
  });

  test('without a loader entry, fs-<type>/raw-<type> is used; with neither registered the config is refused', async () => {
    const rc = parseRunConfig({ ...base(), loaders: [] }, dir);
    await expect(checkRunConfig(mm, rc)).resolves.toBeDefined();
    const { VecModality } = (await import(path.join(VEC_PLUGIN, 'index.js'))) as { VecModality: unknown };
    const bare = await createMultimeditron({ plugins: [], backend: false });
    bare.register(VecModality);
    await expect(asyncIssuesOf(checkRunConfig(bare, rc))).resolves.toContainEqual({ path: '/loaders', rule: 'loader' });
  });
});
