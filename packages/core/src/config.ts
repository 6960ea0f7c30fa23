/**
 * Modality configuration: JSON-Schema-validated, JSON-serialisable, saved as `config.json`.
 * @module
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { ConfigValidationError, ModelLoadError, MultimeditronError } from './errors.js';

/** A JSON Schema (draft-07 subset as understood by ajv). */
export type JSONSchema = Record<string, unknown>;

/** The JSON form of any modality config: the base fields plus whatever a modality adds. */
export interface ModalityConfigJSON {
  /** Registry name of the modality (`meditron_clip`, ...). */
  modelType: string;
  /** The dataset `type` this modality handles (`image`, `audio`, ...). */
  modalityType: string;
  /** Size of the LLM's token embeddings; the projector's output size. */
  hiddenSize: number;
  /** Largest batch one encoder forward call receives; larger inputs are chunked. */
  maxBatchSize: number;
  [key: string]: unknown;
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false, coerceTypes: false });
const validators = new WeakMap<object, ValidateFunction>();

/** Turns ajv's findings into {@link ConfigIssue}s that name the JSON path and the rule. */
export function ajvIssues(errors: ErrorObject[] | null | undefined) {
  return (errors ?? []).map((e) => {
    let p = e.instancePath;
    if (e.keyword === 'required' && typeof e.params['missingProperty'] === 'string') {
      p = `${p}/${e.params['missingProperty']}`;
    }
    if (e.keyword === 'additionalProperties' && typeof e.params['additionalProperty'] === 'string') {
      p = `${p}/${e.params['additionalProperty']}`;
    }
    const allowed = e.keyword === 'enum' ? ` (${(e.params['allowedValues'] as unknown[]).map(String).join(', ')})` : '';
    return { path: p, rule: e.keyword, message: `${e.message ?? 'invalid'}${allowed}` };
  });
}

/**
 * Validates `data` against `schema` (defaults applied in place) and throws a {@link ConfigValidationError}
 * naming every violated path and rule. The compiled validator is cached per schema object.
 */
export function validateWithSchema<T>(schema: JSONSchema, data: unknown, name: string): T {
  let validate = validators.get(schema);
  if (!validate) {
    validate = ajv.compile(schema);
    validators.set(schema, validate);
  }
  if (!validate(data)) throw new ConfigValidationError(name, ajvIssues(validate.errors));
  return data as T;
}

/** The schema shared by every modality config. Subclasses extend it with {@link extendSchema}. */
export const BASE_MODALITY_CONFIG_SCHEMA: JSONSchema = Object.freeze({
  type: 'object',
  properties: {
    modelType: { type: 'string', minLength: 1 },
    modalityType: { type: 'string', minLength: 1 },
    hiddenSize: { type: 'integer', minimum: 1, default: 4096 },
    maxBatchSize: { type: 'integer', minimum: 1, default: 32 },
  },
  required: ['modelType', 'modalityType', 'hiddenSize', 'maxBatchSize'],
});

/**
 * Builds a subclass schema: the base properties plus `properties`, the base `required` plus `required`.
 * Unknown keys stay allowed, as Hugging Face configs keep their kwargs.
 */
export function extendSchema(
  base: JSONSchema,
  extra: { properties?: Record<string, JSONSchema>; required?: string[] },
): JSONSchema {
  return Object.freeze({
    ...base,
    properties: { ...(base['properties'] as Record<string, JSONSchema>), ...(extra.properties ?? {}) },
    required: [...new Set([...((base['required'] as string[]) ?? []), ...(extra.required ?? [])])],
  });
}

/** Constructor type of a config class. */
export interface ConfigClass<C extends BaseModalityConfig = BaseModalityConfig> {
  new (values?: Partial<ModalityConfigJSON>): C;
  readonly schema: JSONSchema;
  readonly name: string;
  /** Validates JSON and builds an instance (see {@link BaseModalityConfig.fromJSON}). */
  fromJSON(json: unknown): C;
  /** Reads and validates `config.json` (see {@link BaseModalityConfig.load}). */
  load(dirOrFile: string): Promise<C>;
}

/** The validated values of each config instance, kept to detect fields reset by subclass field declarations. */
const validatedValues = new WeakMap<object, Record<string, unknown>>();

/**
 * Throws when a subclass field declaration reset a validated value. Under ES2022 class-field semantics
 * (`target` ES2022, `useDefineForClassFields` on by default) a subclass field written `leads!: number` or
 * `leads: number` is (re)defined as `undefined` after the base constructor has assigned the validated value;
 * only `declare leads: number` emits nothing.
 */
function checkFieldsKept(config: BaseModalityConfig): void {
  const data = validatedValues.get(config);
  if (!data) return;
  for (const [k, v] of Object.entries(data)) {
    if (v !== undefined && (config as Record<string, unknown>)[k] === undefined) {
      const cls = config.constructor.name;
      throw new MultimeditronError(
        'E_CONFIG_CLASS',
        `${cls}.${k} was validated but then reset to undefined by a class field declaration in ${cls}`,
        { suggestions: [`Declare config fields with \`declare ${k}: ...;\` (no initialiser, no \`!\`).`] },
      );
    }
  }
}

/**
 * Base class of every modality config. A subclass declares `static schema` (usually
 * `extendSchema(BASE_MODALITY_CONFIG_SCHEMA, {...})`, with `default`s for `modelType` and `modalityType`)
 * and its fields with `declare`, so that class-field initialisers do not overwrite the validated values
 * ({@link BaseModalityConfig.fromJSON} and {@link BaseModalityConfig.load} check this and throw a
 * `MultimeditronError` with code `E_CONFIG_CLASS` when a field was reset):
 *
 * ```ts
 * class EcgConfig extends BaseModalityConfig {
 *   static override schema = extendSchema(BASE_MODALITY_CONFIG_SCHEMA, {
 *     properties: { modelType: { const: 'acme_ecg', default: 'acme_ecg' }, leads: { type: 'integer', default: 12 } },
 *   });
 *   declare leads: number;
 * }
 * ```
 *
 * Validation happens in the constructor; unknown keys are kept and written back by {@link toJSON}.
 */
export class BaseModalityConfig implements ModalityConfigJSON {
  /** JSON Schema of this config class. */
  static schema: JSONSchema = BASE_MODALITY_CONFIG_SCHEMA;

  declare modelType: string;
  declare modalityType: string;
  declare hiddenSize: number;
  declare maxBatchSize: number;
  [key: string]: unknown;

  constructor(values: Partial<ModalityConfigJSON> = {}) {
    const ctor = new.target as unknown as ConfigClass;
    let data: Record<string, unknown>;
    try {
      data = structuredClone(values ?? {}) as Record<string, unknown>;
    } catch (e) {
      throw new ConfigValidationError(ctor.name, [{ path: '', rule: 'type', message: `must be JSON data: ${(e as Error).message}` }], { cause: e });
    }
    validateWithSchema(ctor.schema, data, ctor.name);
    Object.assign(this, data);
    validatedValues.set(this, data);
  }

  /** Validates `json` and builds an instance of the class it is called on. */
  static fromJSON<C extends BaseModalityConfig>(this: new (v?: Partial<ModalityConfigJSON>) => C, json: unknown): C {
    if (json === null || typeof json !== 'object' || Array.isArray(json)) {
      throw new ConfigValidationError(this.name, [{ path: '', rule: 'type', message: 'must be object' }]);
    }
    const config = new this(json as Partial<ModalityConfigJSON>);
    checkFieldsKept(config);
    return config;
  }

  /** The plain JSON object: every validated field and every unknown key, in insertion order. */
  toJSON(): ModalityConfigJSON {
    return structuredClone({ ...this }) as ModalityConfigJSON;
  }

  /** Writes `config.json` into `dir` (created if needed). Returns the file path. */
  async save(dir: string): Promise<string> {
    await fs.mkdir(dir, { recursive: true });
    const file = path.join(dir, 'config.json');
    await fs.writeFile(file, `${JSON.stringify(this.toJSON(), null, 2)}\n`);
    return file;
  }

  /** Reads and validates `config.json` from `dir` (or a path to a `.json` file). */
  static async load<C extends BaseModalityConfig>(
    this: new (v?: Partial<ModalityConfigJSON>) => C,
    dirOrFile: string,
  ): Promise<C> {
    const file = dirOrFile.endsWith('.json') ? dirOrFile : path.join(dirOrFile, 'config.json');
    const json = await readJsonFile(file);
    if (json === null || typeof json !== 'object' || Array.isArray(json)) {
      throw new ConfigValidationError(file, [{ path: '', rule: 'type', message: 'must be object' }]);
    }
    let config: C;
    try {
      config = new this(json as Partial<ModalityConfigJSON>);
    } catch (e) {
      if (e instanceof ConfigValidationError) throw new ConfigValidationError(file, e.issues, { cause: e });
      throw e;
    }
    checkFieldsKept(config);
    return config;
  }
}

/** Reads a JSON file, turning I/O and syntax errors into a {@link ModelLoadError} that names the file. */
export async function readJsonFile(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    throw new ModelLoadError(file, `cannot read: ${(e as Error).message}`, undefined, { cause: e });
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ModelLoadError(file, `not valid JSON: ${(e as Error).message}`, undefined, { cause: e });
  }
}
