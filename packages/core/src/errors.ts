/**
 * Typed errors. Every error thrown by MultiMeditron.ts derives from {@link MultimeditronError} and carries a
 * stable `code`, so hosts can branch on `err.code` (or `instanceof`) instead of parsing messages.
 * @module
 */

/** Options accepted by every MultiMeditron error. */
export interface MultimeditronErrorOptions {
  /** The underlying error, if any. */
  cause?: unknown;
  /** Short hints shown to the user (the CLI prints them under the message). */
  suggestions?: string[];
}

/** Base class of every error this framework throws. */
export class MultimeditronError extends Error {
  /** Stable machine-readable code, e.g. `E_CONFIG`. */
  readonly code: string;
  /** Hints for the user. */
  readonly suggestions: string[];

  constructor(code: string, message: string, options: MultimeditronErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.suggestions = options.suggestions ?? [];
  }
}

/** One ajv finding, reduced to what a user needs. */
export interface ConfigIssue {
  /** JSON pointer of the offending value, e.g. `/hiddenSize` (empty string for the root). */
  path: string;
  /** The violated JSON Schema keyword, e.g. `minimum`, `type`, `enum`, `required`. */
  rule: string;
  /** Human-readable explanation. */
  message: string;
}

/** A configuration object failed JSON-Schema validation. */
export class ConfigValidationError extends MultimeditronError {
  constructor(
    /** Which config: a class name or a file path. */
    readonly configName: string,
    /** Every violation found (ajv runs with `allErrors`). */
    readonly issues: ConfigIssue[],
    options: MultimeditronErrorOptions = {},
  ) {
    const detail = issues.map((i) => `  ${i.path || '/'}: ${i.message} (rule: ${i.rule})`).join('\n');
    super('E_CONFIG', `Invalid ${configName}:\n${detail}`, options);
  }

  /** JSON path of the first issue. */
  get path(): string {
    return this.issues[0]?.path ?? '';
  }

  /** Rule of the first issue. */
  get rule(): string {
    return this.issues[0]?.rule ?? '';
  }
}

/** The phases in which a plugin can fail. */
export type PluginPhase = 'resolve' | 'manifest' | 'import' | 'validate' | 'register';

/** A plugin could not be resolved, imported, validated or registered. */
export class PluginLoadError extends MultimeditronError {
  constructor(
    /** The plugin's package name (or the specifier the host gave). */
    readonly plugin: string,
    /** The plugin's version, when its package.json could be read. */
    readonly version: string | undefined,
    /** Where it failed. */
    readonly phase: PluginPhase,
    message: string,
    options: MultimeditronErrorOptions = {},
  ) {
    super('E_PLUGIN', `Plugin ${plugin}${version ? `@${version}` : ''} failed at ${phase}: ${message}`, options);
  }
}

/** Two registrations under one name in a registry. */
export class DuplicateRegistrationError extends MultimeditronError {
  constructor(
    readonly kind: 'modality' | 'loader' | 'language model',
    readonly registrationName: string,
    readonly existingSource: string,
    readonly newSource: string,
  ) {
    super(
      'E_DUPLICATE',
      `${kind} "${registrationName}" is registered twice: by ${existingSource} and by ${newSource}`,
      { suggestions: ['Remove one of the two plugins from the host\'s plugin list.'] },
    );
  }
}

/** A name was looked up in a registry that does not hold it. */
export class UnknownRegistrationError extends MultimeditronError {
  constructor(
    readonly kind: 'modality' | 'loader' | 'language model',
    readonly registrationName: string,
    readonly known: string[],
  ) {
    super(
      'E_UNKNOWN',
      `Unknown ${kind} "${registrationName}". Registered: ${known.length ? known.join(', ') : '(none)'}`,
      { suggestions: ['Check that the plugin providing it is installed and listed.'] },
    );
  }
}

/** A safetensors file is malformed. */
export class SafetensorsError extends MultimeditronError {
  constructor(readonly file: string, message: string, options: MultimeditronErrorOptions = {}) {
    super('E_SAFETENSORS', `${file}: ${message}`, options);
  }
}

/** A model folder or checkpoint could not be used (missing key, wrong shape, bad config.json...). */
export class ModelLoadError extends MultimeditronError {
  constructor(
    /** The file or folder concerned. */
    readonly file: string,
    message: string,
    /** The tensor key concerned, when there is one. */
    readonly key?: string,
    options: MultimeditronErrorOptions = {},
  ) {
    super('E_MODEL', `${file}: ${key ? `${key}: ` : ''}${message}`, options);
  }
}

/** A model name could not be resolved to a local folder. */
export class ModelResolveError extends MultimeditronError {
  constructor(readonly modelId: string, message: string, options: MultimeditronErrorOptions = {}) {
    super('E_RESOLVE', `Cannot resolve model "${modelId}": ${message}`, options);
  }
}

/** An input sample (image, audio, ...) could not be loaded or processed. */
export class InputError extends MultimeditronError {
  constructor(
    /** The file name, or a description such as `<bytes>` for in-memory input. */
    readonly file: string,
    message: string,
    options: MultimeditronErrorOptions = {},
  ) {
    super('E_INPUT', `${file}: ${message}`, options);
  }
}

/** The requested tfjs backend is not available. */
export class BackendError extends MultimeditronError {
  constructor(readonly backend: string, message: string, options: MultimeditronErrorOptions = {}) {
    super('E_BACKEND', message, options);
  }
}

/** A dataset sample is invalid. Carries the 1-based line (JSONL) or row (Parquet) number. */
export class DatasetError extends MultimeditronError {
  constructor(
    readonly file: string,
    readonly line: number,
    message: string,
    options: MultimeditronErrorOptions = {},
  ) {
    super('E_DATASET', `${file}:${line}: ${message}`, options);
  }
}

/** A tensor had the wrong shape or dtype for an operation. */
export class ShapeError extends MultimeditronError {
  constructor(message: string, options: MultimeditronErrorOptions = {}) {
    super('E_SHAPE', message, options);
  }
}
