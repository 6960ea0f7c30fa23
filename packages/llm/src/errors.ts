/**
 * Errors of the language-model package. Everything else uses core's typed errors (ModelLoadError,
 * ConfigValidationError, InputError, ShapeError).
 * @module
 */
import { MultimeditronError, type MultimeditronErrorOptions } from '@multimeditron/core';

/** A config.json names a `model_type` no registered decoder family handles. */
export class UnknownModelTypeError extends MultimeditronError {
  constructor(
    /** The `model_type` asked for. */
    readonly modelType: string,
    /** The families that are registered. */
    readonly known: string[],
    /** The config.json that named it, when there is one. */
    readonly file?: string,
  ) {
    super(
      'E_UNKNOWN_MODEL_TYPE',
      `${file ? `${file}: ` : ''}no language model family is registered for model_type "${modelType}". Registered: ${known.length ? known.join(', ') : '(none)'}`,
      { suggestions: ['Install and list the plugin that provides this family, or register it with @RegisterLanguageModel.'] },
    );
  }
}

/** A generation request is invalid (too long, placeholder mismatch, bad option...). */
export class GenerationError extends MultimeditronError {
  constructor(
    message: string,
    /** The option or input concerned (e.g. `maxNewTokens`, `modalities`). */
    readonly field?: string,
    options: MultimeditronErrorOptions = {},
  ) {
    super('E_GENERATION', field ? `${field}: ${message}` : message, options);
  }
}
