import * as core from '@multimeditron/core';
import {
  BackendError, ConfigValidationError, DatasetError, DuplicateRegistrationError, InputError, ModelLoadError, ModelResolveError,
  MultimeditronError, PluginLoadError, SafetensorsError, ShapeError, UnknownRegistrationError,
} from '@multimeditron/core';

describe('the public API of @multimeditron/core', () => {
  test.each([
    'BaseModalityLoader', 'BaseModalityConfig', 'BaseModalityProcessor', 'BaseModality', 'Projector', 'createProjector',
    'RegisterModality', 'RegisterLoader', 'AutoModality', 'AutoModalityLoader', 'createMultimeditron', 'definePlugin',
    'selectBackend', 'ModelResolver', 'SafetensorsFile', 'SafetensorsCheckpoint', 'readSafetensors', 'writeSafetensors',
    'extendSchema', 'validateWithSchema', 'discoverPlugins', 'importPlugin', 'getModalityRegistration', 'getLoaderRegistration',
    'ModalityRegistry', 'LoaderRegistry', 'hostTensor', 'toTensor', 'toHostTensor', 'bytesFromValue', 'gelu', 'pixelShuffle', 'linear',
  ])('exports %s', (name) => {
    expect(typeof (core as Record<string, unknown>)[name]).toBe('function');
  });

  test('exports the base config schema, the projector kinds and the DI tokens', () => {
    expect(core.BASE_MODALITY_CONFIG_SCHEMA).toMatchObject({ type: 'object', required: ['modelType', 'modalityType', 'hiddenSize', 'maxBatchSize'] });
    expect(Object.isFrozen(core.BASE_MODALITY_CONFIG_SCHEMA)).toBe(true);
    expect(core.PROJECTION_TYPES).toEqual(['mlp', 'linear', 'pixel_shuffle']);
    expect(Object.keys(core.TOKENS).sort()).toEqual([
      'AutoModality', 'AutoModalityLoader', 'Backend', 'LoaderRegistry', 'Logger', 'ModalityRegistry', 'ModelResolver', 'PluginReport',
    ]);
    for (const [k, v] of Object.entries(core.TOKENS)) expect(v).toBe(Symbol.for(`multimeditron.${k}`));
  });

  test('exports the constants of the Python original', () => {
    expect({
      MODALITY_TYPE_KEY: core.MODALITY_TYPE_KEY, MODALITY_VALUE_KEY: core.MODALITY_VALUE_KEY, NUM_EMBEDDINGS_KEY: core.NUM_EMBEDDINGS_KEY,
      POSITION_IDS_KEY: core.POSITION_IDS_KEY, TEXT_KEY: core.TEXT_KEY, CONVERSATIONS_KEY: core.CONVERSATIONS_KEY,
      MODALITIES_KEY: core.MODALITIES_KEY, IGNORE_TOKEN_INDEX: core.IGNORE_TOKEN_INDEX, DEFAULT_ATTACHMENT_TOKEN: core.DEFAULT_ATTACHMENT_TOKEN,
      PLUGIN_API_VERSION: core.PLUGIN_API_VERSION, MANIFEST_FIELD: core.MANIFEST_FIELD,
    }).toEqual({
      MODALITY_TYPE_KEY: 'type', MODALITY_VALUE_KEY: 'value', NUM_EMBEDDINGS_KEY: 'num_embeddings', POSITION_IDS_KEY: 'position_ids',
      TEXT_KEY: 'text', CONVERSATIONS_KEY: 'conversations', MODALITIES_KEY: 'modalities', IGNORE_TOKEN_INDEX: -100,
      DEFAULT_ATTACHMENT_TOKEN: '<|reserved_special_token_0|>', PLUGIN_API_VERSION: 1, MANIFEST_FIELD: 'multimeditron',
    });
  });

  test('PLUGIN_API_VERSION matches the apiVersion in core\'s own package.json', async () => {
    const { readFile } = await import('node:fs/promises');
    const { REPO_ROOT } = await import('../../../test/helpers/fixtures.js');
    const pkg = JSON.parse(await readFile(`${REPO_ROOT}/packages/core/package.json`, 'utf8'));
    expect(pkg.multimeditron.apiVersion).toBe(core.PLUGIN_API_VERSION);
    // the native backends are optional peers, never dependencies
    for (const p of ['@tensorflow/tfjs-node', '@tensorflow/tfjs-node-gpu']) {
      expect(pkg.peerDependenciesMeta[p]).toEqual({ optional: true });
      expect(pkg.dependencies[p]).toBeUndefined();
    }
    for (const p of ['@tensorflow/tfjs-core', 'tsyringe', 'reflect-metadata']) expect(pkg.peerDependencies[p]).toBeDefined();
  });
});

describe('typed errors: one class per concern, a stable code, the fields a user needs', () => {
  const cause = new Error('root cause');
  const cases: Array<[MultimeditronError, string, Record<string, unknown>, string]> = [
    [new ConfigValidationError('ClipConfig', [{ path: '/hiddenSize', rule: 'minimum', message: 'must be >= 1' }]), 'E_CONFIG',
      { configName: 'ClipConfig', path: '/hiddenSize', rule: 'minimum' }, 'Invalid ClipConfig:\n  /hiddenSize: must be >= 1 (rule: minimum)'],
    [new PluginLoadError('@acme/p', '1.0.0', 'import', 'boom', { cause }), 'E_PLUGIN',
      { plugin: '@acme/p', version: '1.0.0', phase: 'import', cause }, 'Plugin @acme/p@1.0.0 failed at import: boom'],
    [new DuplicateRegistrationError('loader', 'fs-image', 'a', 'b'), 'E_DUPLICATE',
      { kind: 'loader', registrationName: 'fs-image', existingSource: 'a', newSource: 'b' }, 'loader "fs-image" is registered twice: by a and by b'],
    [new UnknownRegistrationError('modality', 'x', ['a', 'b']), 'E_UNKNOWN', { known: ['a', 'b'] }, 'Unknown modality "x". Registered: a, b'],
    [new SafetensorsError('m.safetensors', 'bad'), 'E_SAFETENSORS', { file: 'm.safetensors' }, 'm.safetensors: bad'],
    [new ModelLoadError('m.safetensors', 'missing', 'w'), 'E_MODEL', { file: 'm.safetensors', key: 'w' }, 'm.safetensors: w: missing'],
    [new ModelResolveError('a/b', 'offline'), 'E_RESOLVE', { modelId: 'a/b' }, 'Cannot resolve model "a/b": offline'],
    [new InputError('x.png', 'truncated'), 'E_INPUT', { file: 'x.png' }, 'x.png: truncated'],
    [new BackendError('tensorflow', 'absent'), 'E_BACKEND', { backend: 'tensorflow' }, 'absent'],
    [new DatasetError('d.jsonl', 7, 'bad json'), 'E_DATASET', { file: 'd.jsonl', line: 7 }, 'd.jsonl:7: bad json'],
    [new ShapeError('wrong'), 'E_SHAPE', {}, 'wrong'],
  ];

  test.each(cases)('%s', (err, code, fields, message) => {
    expect(err).toBeInstanceOf(MultimeditronError);
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe(err.constructor.name);
    expect(err.code).toBe(code);
    expect(err.message).toBe(message);
    expect(err).toMatchObject(fields);
    expect(Array.isArray(err.suggestions)).toBe(true);
  });

  test('a cause is kept and suggestions are carried', () => {
    const e = new InputError('a.wav', 'unsupported', { cause, suggestions: ['convert it to WAV'] });
    expect(e.cause).toBe(cause);
    expect(e.suggestions).toEqual(['convert it to WAV']);
    expect(new ShapeError('x').cause).toBeUndefined();
  });
});
