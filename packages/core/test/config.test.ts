import { promises as fs, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ts from 'typescript';
import {
  BASE_MODALITY_CONFIG_SCHEMA, BaseModalityConfig, ConfigValidationError, extendSchema, ModelLoadError, MultimeditronError,
  PROJECTION_TYPES, readJsonFile, validateWithSchema,
} from '@multimeditron/core';
import { REPO_ROOT } from '../../../test/helpers/fixtures.js';

/** A config as a plugin writes one: fields with `declare`, defaults in the schema. */
class EcgConfig extends BaseModalityConfig {
  static override schema = extendSchema(BASE_MODALITY_CONFIG_SCHEMA, {
    properties: {
      modelType: { const: 'acme_ecg', default: 'acme_ecg' },
      modalityType: { const: 'ecg', default: 'ecg' },
      leads: { type: 'integer', minimum: 1, maximum: 15, default: 12 },
      projectionType: { enum: [...PROJECTION_TYPES], default: 'mlp' },
      encoderName: { type: 'string', minLength: 1 },
      filter: {
        type: 'object',
        properties: { lowHz: { type: 'number', minimum: 0, default: 0.5 }, highHz: { type: 'number', exclusiveMinimum: 0 } },
        default: {},
      },
    },
    required: ['encoderName'],
  });
  declare leads: number;
  declare projectionType: string;
  declare encoderName: string;
  declare filter: { lowHz: number; highHz?: number };

  /** Methods are fine; only fields need `declare`. */
  describe(): string {
    return `${this.leads} leads via ${this.encoderName}`;
  }
}

/** The mistake `declare` avoids: under ES2022 class fields this redefines `leads` as undefined after super(). */
class BrokenConfig extends BaseModalityConfig {
  static override schema = extendSchema(BASE_MODALITY_CONFIG_SCHEMA, {
    properties: {
      modelType: { default: 'broken' },
      modalityType: { default: 'ecg' },
      leads: { type: 'integer', default: 12 },
    },
  });
  leads!: number;
}

function thrown(fn: () => unknown): any { // eslint-disable-line @typescript-eslint/no-explicit-any
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error('expected a throw');
}

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'mm-config-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

describe('validation with defaults', () => {
  test('the base schema fills hiddenSize and maxBatchSize', () => {
    const c = new BaseModalityConfig({ modelType: 'x', modalityType: 'image' });
    expect(c.hiddenSize).toBe(4096);
    expect(c.maxBatchSize).toBe(32);
  });

  test('a subclass schema fills its own defaults, nested ones included', () => {
    const c = EcgConfig.fromJSON({ encoderName: 'acme/ecg-base', hiddenSize: 64 });
    expect(c).toBeInstanceOf(EcgConfig);
    expect(c.modelType).toBe('acme_ecg');
    expect(c.modalityType).toBe('ecg');
    expect(c.leads).toBe(12);
    expect(c.projectionType).toBe('mlp');
    expect(c.filter).toEqual({ lowHz: 0.5 });
    expect(c.hiddenSize).toBe(64);
    expect(c.describe()).toBe('12 leads via acme/ecg-base');
  });

  test('unknown keys are kept, as Hugging Face kwargs are, and written back', () => {
    const c = EcgConfig.fromJSON({ encoderName: 'e', torch_dtype: 'float16', extra: { nested: [1, 2] } });
    expect(c['torch_dtype']).toBe('float16');
    expect(c.toJSON()).toMatchObject({ torch_dtype: 'float16', extra: { nested: [1, 2] } });
  });

  test('the input object is not mutated (defaults go to a copy)', () => {
    const json = { encoderName: 'e' };
    EcgConfig.fromJSON(json);
    expect(json).toEqual({ encoderName: 'e' });
  });
});

describe('invalid configs throw ConfigValidationError naming the JSON path and the rule', () => {
  test.each([
    [{ encoderName: 'e', hiddenSize: 0 }, '/hiddenSize', 'minimum'],
    [{ encoderName: 'e', hiddenSize: '4096' }, '/hiddenSize', 'type'],
    [{ encoderName: 'e', maxBatchSize: 1.5 }, '/maxBatchSize', 'type'],
    [{}, '/encoderName', 'required'],
    [{ encoderName: 'e', projectionType: 'conv' }, '/projectionType', 'enum'],
    [{ encoderName: 'e', modelType: 'other' }, '/modelType', 'const'],
    [{ encoderName: 'e', filter: { highHz: 0 } }, '/filter/highHz', 'exclusiveMinimum'],
    [{ encoderName: 'e', leads: 16 }, '/leads', 'maximum'],
  ])('%j -> %s (%s)', (json, p, rule) => {
    const err = thrown(() => EcgConfig.fromJSON(json));
    expect(err).toBeInstanceOf(ConfigValidationError);
    expect(err).toBeInstanceOf(MultimeditronError);
    expect(err.code).toBe('E_CONFIG');
    expect(err.configName).toBe('EcgConfig');
    expect(err.path).toBe(p);
    expect(err.rule).toBe(rule);
    expect(err.message).toContain(`${p}: `);
    expect(err.message).toContain(`(rule: ${rule})`);
  });

  test('every violation is reported at once; enum errors list the allowed values', () => {
    const err = thrown(() => EcgConfig.fromJSON({ hiddenSize: -1, projectionType: 'x' })) as ConfigValidationError;
    expect(err.issues.map((i) => `${i.path} ${i.rule}`).sort()).toEqual(['/encoderName required', '/hiddenSize minimum', '/projectionType enum']);
    expect(err.issues.find((i) => i.rule === 'enum')!.message).toContain('mlp, linear, pixel_shuffle');
  });

  test('a non-object is rejected at the root', () => {
    for (const bad of [null, 3, 'x', [1]]) {
      const err = thrown(() => EcgConfig.fromJSON(bad)) as ConfigValidationError;
      expect(err).toBeInstanceOf(ConfigValidationError);
      expect(err.path).toBe('');
      expect(err.rule).toBe('type');
    }
  });

  test('validateWithSchema works on any schema (loader options use it)', () => {
    const schema = { type: 'object', properties: { basePath: { type: 'string' }, n: { type: 'integer', default: 2 } } };
    expect(validateWithSchema(schema, { basePath: 'a' }, 'opts')).toEqual({ basePath: 'a', n: 2 });
    const err = thrown(() => validateWithSchema(schema, { basePath: 1 }, 'FsEcgLoader options'));
    expect(err.message).toMatch(/^Invalid FsEcgLoader options:\n {2}\/basePath: must be string \(rule: type\)/);
  });
});

describe('JSON and config.json round trips', () => {
  test('fromJSON(toJSON()) gives an equal config of the same class', () => {
    const a = EcgConfig.fromJSON({ encoderName: 'e', leads: 3, kw: { a: [1, { b: null }] }, hiddenSize: 8 });
    const b = EcgConfig.fromJSON(a.toJSON());
    expect(b).toBeInstanceOf(EcgConfig);
    expect(b.toJSON()).toEqual(a.toJSON());
    expect(JSON.stringify(b)).toBe(JSON.stringify(a));
  });

  test('toJSON is a detached copy', () => {
    const a = EcgConfig.fromJSON({ encoderName: 'e' });
    const j = a.toJSON();
    (j['filter'] as { lowHz: number }).lowHz = 99;
    expect(a.filter.lowHz).toBe(0.5);
  });

  test('save -> load -> save is byte-identical, and unknown keys survive', async () => {
    const d1 = path.join(dir, 'rt1');
    const d2 = path.join(dir, 'rt2');
    const a = EcgConfig.fromJSON({ encoderName: 'acme/ecg', unknown_kwarg: [1.5, 'x'], leads: 6 });
    const f1 = await a.save(d1);
    expect(f1).toBe(path.join(d1, 'config.json'));
    const b = await EcgConfig.load(d1);
    expect(b).toBeInstanceOf(EcgConfig);
    expect(b.leads).toBe(6);
    expect(b['unknown_kwarg']).toEqual([1.5, 'x']);
    await b.save(d2);
    expect(readFileSync(path.join(d2, 'config.json'))).toEqual(readFileSync(f1));
    // and load accepts the file path itself
    expect((await EcgConfig.load(f1)).toJSON()).toEqual(a.toJSON());
  });

  test('a saved file with defaults missing gets them, and the next save is stable', async () => {
    const d = path.join(dir, 'partial');
    await fs.mkdir(d, { recursive: true });
    await fs.writeFile(path.join(d, 'config.json'), JSON.stringify({ encoderName: 'e', custom: true }));
    const c = await EcgConfig.load(d);
    expect(c.toJSON()).toEqual({
      encoderName: 'e', custom: true, modelType: 'acme_ecg', modalityType: 'ecg', hiddenSize: 4096, maxBatchSize: 32,
      leads: 12, projectionType: 'mlp', filter: { lowHz: 0.5 },
    });
    const first = readFileSync(await c.save(path.join(d, 'a')));
    const second = readFileSync(await (await EcgConfig.load(path.join(d, 'a'))).save(path.join(d, 'b')));
    expect(second).toEqual(first);
  });

  test('load names the file: invalid values, bad JSON, missing file', async () => {
    const d = path.join(dir, 'bad');
    await fs.mkdir(d, { recursive: true });
    const file = path.join(d, 'config.json');
    await fs.writeFile(file, JSON.stringify({ encoderName: 'e', hiddenSize: -3 }));
    const err = await EcgConfig.load(d).catch((e) => e);
    expect(err).toBeInstanceOf(ConfigValidationError);
    expect(err.configName).toBe(file);
    expect(err.message).toContain(file);
    expect(err.path).toBe('/hiddenSize');

    await fs.writeFile(file, '{"encoderName": ');
    const syntax = await EcgConfig.load(d).catch((e) => e);
    expect(syntax).toBeInstanceOf(ModelLoadError);
    expect(syntax.file).toBe(file);
    expect(syntax.message).toMatch(/not valid JSON/);

    const missing = (await readJsonFile(path.join(d, 'nope.json')).catch((e) => e)) as Error;
    expect(missing).toBeInstanceOf(ModelLoadError);
    expect(missing.message).toMatch(/nope\.json: cannot read/);

    await fs.writeFile(file, '[1, 2]');
    const notObject = await EcgConfig.load(d).catch((e) => e);
    expect(notObject).toBeInstanceOf(ConfigValidationError);
    expect(notObject.rule).toBe('type');
  });
});

describe('the `declare` field pattern under the project tsconfig (ES2022, useDefineForClassFields default)', () => {
  test('the shared tsconfig targets ES2022 and leaves useDefineForClassFields at its default (on)', () => {
    const base = ts.readConfigFile(path.join(REPO_ROOT, 'tsconfig.base.json'), ts.sys.readFile).config;
    expect(base.compilerOptions.target).toBe('ES2022');
    expect(base.compilerOptions.useDefineForClassFields).toBeUndefined();
  });

  test('tsc with those options emits nothing for `declare` fields and a reset for `!` fields', () => {
    const { options } = ts.parseJsonConfigFileContent(
      ts.readConfigFile(path.join(REPO_ROOT, 'tsconfig.base.json'), ts.sys.readFile).config, ts.sys, REPO_ROOT,
    );
    const source = `
      class Base { constructor(v: Record<string, unknown>) { Object.assign(this, v); } }
      class Declared extends Base { declare leads: number; }
      class Banged extends Base { leads!: number; }
      return [new Declared({ leads: 12 }).leads, new Banged({ leads: 12 }).leads];`;
    const js = ts.transpileModule(source, { compilerOptions: { ...options, module: ts.ModuleKind.ESNext } }).outputText;
    expect(new Function(js)()).toEqual([12, undefined]); // eslint-disable-line @typescript-eslint/no-implied-eval
  });

  test('a subclass with declared fields keeps its validated values (constructor and fromJSON)', () => {
    const c = new EcgConfig({ encoderName: 'e', leads: 5 });
    expect(c.leads).toBe(5);
    expect(c.encoderName).toBe('e');
    expect(Object.keys(c)).toEqual(expect.arrayContaining(['leads', 'encoderName', 'filter', 'projectionType']));
    expect(EcgConfig.fromJSON({ encoderName: 'e' }).leads).toBe(12);
  });

  test('a subclass that forgets `declare` loses the value, and fromJSON/load say so', async () => {
    // this test file is compiled with the same options, so the pitfall is real here
    expect(new BrokenConfig({}).leads).toBeUndefined();
    const err = thrown(() => BrokenConfig.fromJSON({}));
    expect(err).toBeInstanceOf(MultimeditronError);
    expect(err.code).toBe('E_CONFIG_CLASS');
    expect(err.message).toContain('BrokenConfig.leads');
    expect(err.suggestions.join(' ')).toContain('declare leads');
    const d = path.join(dir, 'broken');
    await fs.mkdir(d, { recursive: true });
    await fs.writeFile(path.join(d, 'config.json'), '{}');
    await expect(BrokenConfig.load(d)).rejects.toMatchObject({ code: 'E_CONFIG_CLASS' });
  });
});
