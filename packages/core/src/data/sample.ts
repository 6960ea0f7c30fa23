/**
 * Dataset samples: their shape, their validation, and the rules for the paths they contain.
 *
 * A sample is either a pretraining sample (`text`) or an instruction sample (`conversations`), with one
 * `modalities` entry per attachment placeholder in the text, in order. Paths resolve against the dataset's
 * folder and may not leave it unless allowed. Validation never throws for a bad sample: it returns every
 * problem as a {@link SampleError} that carries the file, the 1-based line (or row) and a {@link SampleErrorKind}.
 * @module
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { DEFAULT_ATTACHMENT_TOKEN } from '../constants.js';
import { DatasetError, type MultimeditronErrorOptions } from '../errors.js';
import type { ModalityInput } from '../loader.js';

/** One turn of an instruction sample. */
export interface ConversationTurn {
  /** `system`, `user`, `assistant`, ... Only `assistant` turns are labelled by the collator. */
  role: string;
  /** The turn's text. Attachment placeholders may appear in `user` turns only. */
  content: string;
  [key: string]: unknown;
}

/**
 * A validated dataset sample. Exactly one of `text` and `conversations` is set. `modalities` holds one entry
 * per placeholder, in the order the placeholders appear; values are kept as stored (a path relative to the
 * dataset folder, bytes, `{bytes}`, or `{bytes: null, path}`). Any other keys of the stored sample are kept.
 */
export interface Sample {
  /** Pretraining text with attachment placeholders. */
  text?: string;
  /** Instruction turns; placeholders sit in `user` turns. */
  conversations?: ConversationTurn[];
  /** One entry per placeholder, in order (empty for text-only samples). */
  modalities: ModalityInput[];
  [key: string]: unknown;
}

/** The kinds of per-sample errors, for reports and summaries. */
export type SampleErrorKind =
  /** The line is not valid JSON (JSONL). */
  | 'json'
  /** The sample's shape is wrong: not an object, neither/both of text and conversations, wrong field types. */
  | 'format'
  /** The number of placeholders differs from the number of modalities. */
  | 'placeholder-count'
  /** A placeholder sits in a turn that is not a `user` turn. */
  | 'placeholder-role'
  /** A modality's `type` is not among the known types. */
  | 'unknown-type'
  /** A modality's `value` is neither a path nor bytes. */
  | 'bad-value'
  /** A path value names no file. */
  | 'missing-file'
  /** A path value resolves outside the dataset folder. */
  | 'outside-base'
  /** A loader failed on a modality (`check-dataset --load`, the embed pipeline). */
  | 'load'
  /** A part of the file could not be read (e.g. a corrupt Parquet row group). */
  | 'read';

/** A per-sample problem: a {@link DatasetError} with a {@link SampleErrorKind} and, when it concerns one, the modality. */
export class SampleError extends DatasetError {
  constructor(
    file: string,
    line: number,
    /** What went wrong, for grouping in reports. */
    readonly kind: SampleErrorKind,
    /** The message without the `file:line:` prefix. */
    readonly detail: string,
    options: MultimeditronErrorOptions & { modalityIndex?: number } = {},
  ) {
    super(file, line, detail, options);
    if (options.modalityIndex !== undefined) this.modalityIndex = options.modalityIndex;
  }

  /** Index (within the sample's `modalities`) of the modality concerned, if any. */
  readonly modalityIndex?: number;
}

/** How a modality value is stored. */
export type ModalityValueKind =
  /** A path (a string, or `{path}` with no bytes), relative to the dataset folder. */
  | { kind: 'path'; path: string }
  /** Bytes: a Buffer/Uint8Array, a byte array, a `data:` URL, or `{bytes}` (Parquet / Hugging Face datasets). */
  | { kind: 'bytes' };

/**
 * Tells whether a modality value is a path or bytes, or `undefined` when it is neither.
 * Strings are paths, except `data:` URLs; `{bytes, path}` objects (the Hugging Face `Image`/`Audio` feature)
 * are bytes when `bytes` is set, else a path.
 */
export function modalityValueKind(value: unknown): ModalityValueKind | undefined {
  if (typeof value === 'string') {
    if (value.startsWith('data:')) return { kind: 'bytes' };
    return value.length > 0 ? { kind: 'path', path: value } : undefined;
  }
  if (value instanceof Uint8Array || ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return { kind: 'bytes' };
  if (Array.isArray(value)) {
    return value.length > 0 && value.every((v) => Number.isInteger(v) && v >= 0 && v < 256) ? { kind: 'bytes' } : undefined;
  }
  if (value && typeof value === 'object') {
    const o = value as { bytes?: unknown; path?: unknown };
    if (o.bytes !== undefined && o.bytes !== null) return modalityValueKind(o.bytes)?.kind === 'bytes' || typeof o.bytes === 'string' ? { kind: 'bytes' } : undefined;
    if (typeof o.path === 'string' && o.path.length > 0) return { kind: 'path', path: o.path };
  }
  return undefined;
}

/**
 * Resolves a sample path against the dataset folder. `outside` is true when the result is not inside
 * `baseDir` (the check is lexical, on the normalised path, like the fs-* loaders').
 */
export function resolveDatasetPath(baseDir: string, p: string): { path: string; outside: boolean } {
  const base = path.resolve(baseDir);
  const full = path.resolve(base, p);
  const rel = path.relative(base, full);
  return { path: full, outside: rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel) };
}

/** Number of non-overlapping occurrences of `token` in `text`. */
export function countPlaceholders(text: string, token: string = DEFAULT_ATTACHMENT_TOKEN): number {
  if (!token) return 0;
  let n = 0;
  for (let i = text.indexOf(token); i !== -1; i = text.indexOf(token, i + token.length)) n++;
  return n;
}

/** The role whose turns carry attachment placeholders. */
export const USER_ROLE = 'user';
/** The role whose turns the collator labels. */
export const ASSISTANT_ROLE = 'assistant';

/** Options of {@link validateSample}. */
export interface ValidateSampleOptions {
  /** The dataset file, for error messages. */
  file: string;
  /** 1-based line (JSONL) or row (Parquet). */
  line: number;
  /** Folder paths resolve against. Default: the folder of `file`. */
  baseDir?: string;
  /** The placeholder. Default {@link DEFAULT_ATTACHMENT_TOKEN}. */
  attachmentToken?: string;
  /** Known modality types; a modality of another type is an `unknown-type` error. Default: no check. */
  modalityTypes?: readonly string[];
  /** Allow paths that resolve outside `baseDir`. Default false. */
  allowOutsideBase?: boolean;
  /** Check that path values name existing files. Default true. */
  checkFiles?: boolean;
}

/** The outcome of {@link validateSample}: the sample when it is valid, else every error found. */
export interface SampleValidation {
  sample?: Sample;
  errors: SampleError[];
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && !ArrayBuffer.isView(x);
}

/**
 * Validates one stored sample (a parsed JSONL line or a Parquet row) and reports every problem: shape,
 * placeholder count and placement, modality types and values, paths leaving the folder and missing files.
 * `null` fields (as Parquet stores absent columns) count as absent and are dropped from the returned sample.
 */
export async function validateSample(raw: unknown, options: ValidateSampleOptions): Promise<SampleValidation> {
  const { file, line } = options;
  const token = options.attachmentToken ?? DEFAULT_ATTACHMENT_TOKEN;
  const baseDir = options.baseDir ?? path.dirname(path.resolve(file));
  const errors: SampleError[] = [];
  const fail = (kind: SampleErrorKind, msg: string, modalityIndex?: number): void => {
    errors.push(new SampleError(file, line, kind, msg, modalityIndex === undefined ? {} : { modalityIndex }));
  };

  if (!isPlainObject(raw)) {
    fail('format', `a sample must be a JSON object, got ${Array.isArray(raw) ? 'an array' : raw === null ? 'null' : typeof raw}`);
    return { errors };
  }
  const sample: Record<string, unknown> = { ...raw };
  for (const k of ['text', 'conversations', 'modalities']) if (sample[k] === null) delete sample[k];
  const hasText = sample['text'] !== undefined;
  const hasConv = sample['conversations'] !== undefined;

  // 1. text or conversations, and the placeholders they hold
  let placeholders = 0;
  if (hasText && hasConv) {
    fail('format', 'has both "text" and "conversations"; a sample is either a pretraining or an instruction sample');
  } else if (!hasText && !hasConv) {
    fail('format', 'has neither "text" nor "conversations"');
  } else if (hasText) {
    if (typeof sample['text'] !== 'string') fail('format', `"text" must be a string, got ${typeof sample['text']}`);
    else placeholders = countPlaceholders(sample['text'], token);
  } else {
    const conv = sample['conversations'];
    if (!Array.isArray(conv) || conv.length === 0) {
      fail('format', '"conversations" must be a non-empty array of {role, content} turns');
    } else {
      conv.forEach((turn, i) => {
        if (!isPlainObject(turn)) return fail('format', `conversations[${i}] must be an object with "role" and "content"`);
        if (typeof turn['role'] !== 'string' || !turn['role']) return fail('format', `conversations[${i}].role must be a non-empty string`);
        if (typeof turn['content'] !== 'string') return fail('format', `conversations[${i}].content must be a string`);
        const n = countPlaceholders(turn['content'], token);
        if (n > 0 && turn['role'] !== USER_ROLE) {
          fail('placeholder-role', `conversations[${i}] (${turn['role']}) contains ${n} placeholder(s) ${token}; placeholders belong in "${USER_ROLE}" turns`);
        }
        if (turn['role'] === USER_ROLE) placeholders += n;
      });
    }
  }

  // 2. modalities
  const mods = sample['modalities'] ?? [];
  if (!Array.isArray(mods)) {
    fail('format', '"modalities" must be an array of {type, value}');
    return { errors };
  }
  sample['modalities'] = mods;
  const formatOk = !errors.some((e) => e.kind === 'format');
  if (formatOk && placeholders !== mods.length) {
    fail('placeholder-count', `${placeholders} placeholder(s) ${token} in the ${hasText ? 'text' : 'user turns'} but ${mods.length} modalit${mods.length === 1 ? 'y' : 'ies'}`);
  }
  const fileChecks: Array<Promise<void>> = [];
  mods.forEach((m, i) => {
    if (!isPlainObject(m)) return fail('format', `modalities[${i}] must be an object {type, value}`, i);
    if (typeof m['type'] !== 'string' || !m['type']) return fail('format', `modalities[${i}].type must be a non-empty string`, i);
    if (options.modalityTypes && !options.modalityTypes.includes(m['type'])) {
      fail('unknown-type', `modalities[${i}]: unknown modality type "${m['type']}" (known: ${options.modalityTypes.join(', ') || 'none'})`, i);
    }
    const kind = modalityValueKind(m['value']);
    if (!kind) {
      return fail('bad-value', `modalities[${i}].value must be a path, bytes, or {bytes}/{path}; got ${m['value'] === null ? 'null' : typeof m['value']}`, i);
    }
    if (kind.kind === 'path') {
      const r = resolveDatasetPath(baseDir, kind.path);
      if (r.outside && !options.allowOutsideBase) {
        return fail('outside-base', `modalities[${i}]: path ${kind.path} resolves outside the dataset folder ${path.resolve(baseDir)}`, i);
      }
      if (options.checkFiles ?? true) {
        fileChecks.push(
          fs.stat(r.path).then(
            (st) => {
              if (!st.isFile()) fail('missing-file', `modalities[${i}]: ${kind.path} is not a file (resolved to ${r.path})`, i);
            },
            () => fail('missing-file', `modalities[${i}]: file not found: ${kind.path} (resolved to ${r.path})`, i),
          ),
        );
      }
    }
  });
  await Promise.all(fileChecks);
  if (errors.length) {
    errors.sort((a, b) => (a.modalityIndex ?? -1) - (b.modalityIndex ?? -1));
    return { errors };
  }
  return { sample: sample as Sample, errors };
}
