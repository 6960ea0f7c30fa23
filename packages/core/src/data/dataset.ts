/**
 * Streaming dataset readers: JSONL (one sample per line), Parquet (read row group by row group, so memory
 * stays flat in the file's size) and Hugging Face `datasets` folders written by `save_to_disk` (Arrow IPC
 * streams, read record batch by record batch; see {@link resolveHfDataset}). Each sample comes out validated,
 * as a {@link DatasetRecord} carrying either the sample or its errors with the line (row) number; one bad
 * sample never stops the stream.
 *
 * Path values are NOT rewritten: they stay as stored (relative to the dataset folder), and every record
 * carries `baseDir`, the folder they resolve against (see {@link resolveDatasetPath} and {@link chooseLoader}).
 * @module
 */
import { createReadStream, promises as fs, statSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, type AsyncBuffer, type FileMetaData } from 'hyparquet';
import { InputError } from '../errors.js';
import { SampleError, validateSample, type Sample, type ValidateSampleOptions } from './sample.js';
import { HF_DATASET_DICT_FILE, HF_STATE_FILE, isHfDatasetDir, readArrowRows, resolveHfDataset, type RecordBatchInfo } from './arrow.js';

export {
  arrowRowToJs, arrowValueToJs, countArrowRows, HF_DATASET_DICT_FILE, HF_DATASET_INFO_FILE, HF_DEFAULT_SPLIT, HF_STATE_FILE,
  isHfDatasetDir, readArrowRows, resolveHfDataset,
} from './arrow.js';
export type { ArrowRow, ArrowRowsOptions, HfDatasetSource, RecordBatchInfo } from './arrow.js';

/**
 * The dataset formats: a JSONL file, a Parquet file, or `hf-arrow`: a Hugging Face `datasets` folder written
 * by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (Arrow IPC streams listed by `state.json`), or a
 * single `.arrow` file.
 */
export type DatasetFormat = 'jsonl' | 'parquet' | 'hf-arrow';

/** A Parquet row group about to be read (see {@link DatasetOptions.onRowGroup}). */
export interface RowGroupInfo {
  /** 0-based row-group index. */
  index: number;
  /** First row (0-based, inclusive). */
  rowStart: number;
  /** Last row (0-based, exclusive). */
  rowEnd: number;
  /** Number of row groups in the file. */
  count: number;
}

/** Options of {@link openDataset}. */
export interface DatasetOptions {
  /** The placeholder. Default `<|reserved_special_token_0|>`. */
  attachmentToken?: string;
  /** Known modality types; others are `unknown-type` errors. Default: no check. */
  modalityTypes?: readonly string[];
  /** Allow paths that resolve outside the dataset folder. Default false. */
  allowOutsideBase?: boolean;
  /** Check that path values name existing files. Default true. */
  checkFiles?: boolean;
  /**
   * Skip the samples before this 0-based index (resume). Skipped JSONL lines are not parsed, skipped Parquet
   * row groups not read, skipped Arrow record batches not read (only their headers are).
   */
  startIndex?: number;
  /** Stop after this many samples (counted from `startIndex`). */
  limit?: number;
  /** Force a format instead of guessing it from the extension (or, for a folder, from its `state.json`/`dataset_dict.json`). */
  format?: DatasetFormat;
  /** Called before each Parquet row group is read (progress, tests). */
  onRowGroup?: (info: RowGroupInfo) => void;
  /**
   * `hf-arrow` only: the split of a `DatasetDict` folder to read. Default `train`; a split the folder does not
   * have is an {@link InputError} listing the available ones. For a `Dataset` folder, a split other than the
   * one its `state.json` records is an error too.
   */
  split?: string;
  /** Called before each Arrow record batch is converted (`hf-arrow`; progress, tests). */
  onRecordBatch?: (info: RecordBatchInfo) => void;
  /**
   * Folder that relative path values resolve against. Default: the folder of the JSONL/Parquet/`.arrow`
   * file; for a `save_to_disk` folder, that folder (for a `DatasetDict`, its root, not the split's subfolder).
   */
  baseDir?: string;
}

/** One sample of a dataset, valid or not. */
export interface DatasetRecord {
  /** 0-based sample index (blank JSONL lines are not samples). */
  index: number;
  /** 1-based line (JSONL, blank lines counted) or row (Parquet; Arrow: counted across the files, in order). */
  line: number;
  /** The dataset file (for a Hugging Face folder, the `.arrow` file holding the row). */
  file: string;
  /** Absolute folder that the sample's paths resolve against. */
  baseDir: string;
  /** The validated sample, when it has no error. */
  sample?: Sample;
  /** The first error, when the sample is invalid. */
  error?: SampleError;
  /** Every error found, when the sample is invalid. */
  errors?: SampleError[];
}

/**
 * The format of a dataset: by extension, `.jsonl`/`.ndjson`, `.parquet`/`.pq` or `.arrow` (`hf-arrow`); a
 * folder holding `state.json` or `dataset_dict.json` (a Hugging Face `save_to_disk` folder), or one of those
 * two files, is `hf-arrow`. Throws {@link InputError} otherwise (folders are looked at synchronously).
 */
export function datasetFormat(file: string): DatasetFormat {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.jsonl' || ext === '.ndjson') return 'jsonl';
  if (ext === '.parquet' || ext === '.pq') return 'parquet';
  if (ext === '.arrow') return 'hf-arrow';
  const base = path.basename(file);
  if (base === HF_STATE_FILE || base === HF_DATASET_DICT_FILE) return 'hf-arrow';
  let isDir = false;
  try {
    isDir = statSync(file).isDirectory();
  } catch {
    // not there: reported below as an unsupported extension, like any other name
  }
  if (isDir) {
    if (isHfDatasetDir(file)) return 'hf-arrow';
    throw new InputError(file, `is a folder but not a Hugging Face datasets folder (no ${HF_STATE_FILE} or ${HF_DATASET_DICT_FILE})`, {
      suggestions: ['Point at the folder given to Dataset.save_to_disk / DatasetDict.save_to_disk, or at a .jsonl, .parquet or .arrow file.'],
    });
  }
  throw new InputError(file, `unsupported dataset extension "${ext}" (expected .jsonl, .ndjson, .parquet or .arrow, or a Hugging Face save_to_disk folder)`, {
    suggestions: ['Pass { format: "jsonl" | "parquet" | "hf-arrow" } to read a file with another extension.'],
  });
}

function toRecord(
  index: number, line: number, file: string, baseDir: string,
  v: { sample?: Sample; errors: SampleError[] },
): DatasetRecord {
  if (v.errors.length) return { index, line, file, baseDir, error: v.errors[0]!, errors: v.errors };
  return { index, line, file, baseDir, sample: v.sample! };
}

function validationOptions(file: string, line: number, baseDir: string, o: DatasetOptions): ValidateSampleOptions {
  return {
    file, line, baseDir,
    ...(o.attachmentToken !== undefined ? { attachmentToken: o.attachmentToken } : {}),
    ...(o.modalityTypes ? { modalityTypes: o.modalityTypes } : {}),
    allowOutsideBase: Boolean(o.allowOutsideBase),
    checkFiles: o.checkFiles ?? true,
  };
}

/**
 * Opens a dataset for streaming. The format follows the extension or the folder's content (or
 * `options.format`, see {@link datasetFormat}); a missing file, an unsupported extension, or a bad Hugging Face
 * folder (unknown split, bad `state.json`, missing, non-Arrow or truncated `.arrow` file) throws
 * {@link InputError} on the first iteration (a truncated file: when the reader reaches it).
 *
 * ```ts
 * for await (const rec of openDataset('data/train.jsonl', { modalityTypes: ['image'] })) {
 *   if (rec.error) console.error(rec.error.message); // "data/train.jsonl:12: modalities[0]: file not found: ..."
 *   else use(rec.sample!, rec.baseDir);
 * }
 * ```
 */
export function openDataset(file: string, options: DatasetOptions = {}): AsyncIterable<DatasetRecord> {
  return {
    [Symbol.asyncIterator]: () => {
      const format = options.format ?? datasetFormat(file);
      const records = format === 'jsonl' ? readJsonl(file, options) : format === 'parquet' ? readParquetFile(file, options) : readHfArrow(file, options);
      return records[Symbol.asyncIterator]();
    },
  };
}

async function assertFile(file: string): Promise<void> {
  const st = await fs.stat(file).catch((e: NodeJS.ErrnoException) => {
    throw new InputError(file, e.code === 'ENOENT' ? 'dataset file not found' : `cannot read: ${e.message}`, { cause: e });
  });
  if (!st.isFile()) throw new InputError(file, 'is not a file');
}

async function* readJsonl(file: string, options: DatasetOptions): AsyncGenerator<DatasetRecord> {
  await assertFile(file);
  const baseDir = path.resolve(options.baseDir ?? path.dirname(path.resolve(file)));
  const start = options.startIndex ?? 0;
  const end = options.limit === undefined ? Infinity : start + options.limit;
  const input = createReadStream(file, { encoding: 'utf8' });
  const rl = readline.createInterface({ input, crlfDelay: Infinity });
  let line = 0;
  let index = -1;
  try {
    for await (let text of rl) {
      line++;
      if (line === 1 && text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      if (text.trim() === '') continue;
      index++;
      if (index < start) continue;
      if (index >= end) break;
      let raw: unknown;
      try {
        raw = JSON.parse(text);
      } catch (e) {
        const err = new SampleError(file, line, 'json', `invalid JSON: ${(e as Error).message}`, { cause: e });
        yield { index, line, file, baseDir, error: err, errors: [err] };
        continue;
      }
      yield toRecord(index, line, file, baseDir, await validateSample(raw, validationOptions(file, line, baseDir, options)));
    }
  } finally {
    rl.close();
    input.destroy();
  }
}

async function* readParquetFile(file: string, options: DatasetOptions): AsyncGenerator<DatasetRecord> {
  await assertFile(file);
  yield* readParquetDataset(await asyncBufferFromFile(file), { ...options, file });
}

/** Options of {@link readParquetDataset}. */
export interface ParquetSourceOptions extends DatasetOptions {
  /** Name used in errors and records (a path or URL). */
  file: string;
  /** Folder that path values resolve against. Default: the folder of `file`. */
  baseDir?: string;
}

/**
 * Streams samples from a Parquet source given as a hyparquet `AsyncBuffer` (a local file, or
 * `asyncBufferFromUrl` for a remote one), one row group at a time: only the current group's rows are in
 * memory. Columns `text`, `conversations` (list of `{role, content}` structs, or a JSON string) and
 * `modalities` (list of `{type, value}` structs whose value is a path string, a binary, or a
 * `{bytes, path}` struct as Hugging Face datasets store images, or a JSON string) are read; other columns
 * are kept on the sample. Binary columns stay `Uint8Array`s. A row group that cannot be decoded yields a
 * `read` error for each of its rows and the stream goes on.
 */
export async function* readParquetDataset(source: AsyncBuffer, options: ParquetSourceOptions): AsyncGenerator<DatasetRecord> {
  const { file } = options;
  const baseDir = path.resolve(options.baseDir ?? path.dirname(path.resolve(file)));
  let metadata: FileMetaData;
  try {
    metadata = await parquetMetadataAsync(source);
  } catch (e) {
    throw new InputError(file, `not a readable Parquet file: ${(e as Error).message}`, { cause: e });
  }
  const start = options.startIndex ?? 0;
  const end = options.limit === undefined ? Infinity : start + options.limit;
  const groups = metadata.row_groups;
  let rowStart = 0;
  for (let g = 0; g < groups.length; g++) {
    const rowEnd = rowStart + Number(groups[g]!.num_rows);
    const from = Math.max(rowStart, start);
    const to = Math.min(rowEnd, end);
    if (from < to) {
      options.onRowGroup?.({ index: g, rowStart, rowEnd, count: groups.length });
      let rows: Array<Record<string, unknown>> | undefined;
      let readError: unknown;
      try {
        rows = (await parquetReadObjects({ file: source, metadata, rowStart: from, rowEnd: to, utf8: false })) as Array<Record<string, unknown>>;
      } catch (e) {
        readError = e;
      }
      for (let r = from; r < to; r++) {
        const line = r + 1;
        if (!rows) {
          const err = new SampleError(file, line, 'read', `row group ${g} cannot be read: ${(readError as Error)?.message ?? String(readError)}`, { cause: readError });
          yield { index: r, line, file, baseDir, error: err, errors: [err] };
          continue;
        }
        const row = rows[r - from]!;
        const decoded = normalizeColumns(row);
        if (decoded) {
          const err = new SampleError(file, line, 'format', decoded);
          yield { index: r, line, file, baseDir, error: err, errors: [err] };
          continue;
        }
        yield toRecord(r, line, file, baseDir, await validateSample(row, validationOptions(file, line, baseDir, options)));
      }
      rows = undefined;
    }
    rowStart = rowEnd;
    if (rowStart >= end) break;
  }
}

/**
 * Streams a Hugging Face `save_to_disk` folder (or one `.arrow` file): rows are read record batch by record
 * batch across the files `state.json` lists, converted to plain objects (see {@link arrowValueToJs}) and
 * validated like Parquet rows. `line` counts rows across the files.
 */
async function* readHfArrow(p: string, options: DatasetOptions): AsyncGenerator<DatasetRecord> {
  const source = await resolveHfDataset(p, options.split !== undefined ? { split: options.split } : {});
  const baseDir = path.resolve(options.baseDir ?? source.baseDir);
  for await (const item of readArrowRows(source.files, {
    ...(options.startIndex !== undefined ? { startIndex: options.startIndex } : {}),
    ...(options.limit !== undefined ? { limit: options.limit } : {}),
    ...(options.onRecordBatch ? { onRecordBatch: options.onRecordBatch } : {}),
  })) {
    const { index, file } = item;
    const line = index + 1;
    if (!item.row) {
      const err = new SampleError(file, line, 'read', item.error?.message ?? 'row cannot be read', { cause: item.error });
      yield { index, line, file, baseDir, error: err, errors: [err] };
      continue;
    }
    const bad = normalizeColumns(item.row);
    if (bad) {
      const err = new SampleError(file, line, 'format', bad);
      yield { index, line, file, baseDir, error: err, errors: [err] };
      continue;
    }
    yield toRecord(index, line, file, baseDir, await validateSample(item.row, validationOptions(file, line, baseDir, options)));
  }
}

/**
 * Brings the `conversations`/`modalities` columns of a Parquet or Arrow row to the sample shape, in place:
 * JSON strings are parsed, and a struct of equal-length lists (how Hugging Face stores a `Sequence` of dicts,
 * e.g. `{role: [...], content: [...]}`) becomes a list of structs. Returns an error message on bad JSON.
 */
function normalizeColumns(row: Record<string, unknown>): string | undefined {
  for (const key of ['conversations', 'modalities']) {
    const v = row[key];
    if (typeof v === 'string') {
      try {
        row[key] = JSON.parse(v);
      } catch (e) {
        return `column "${key}" is a string but not valid JSON: ${(e as Error).message}`;
      }
    } else if (v && typeof v === 'object' && !Array.isArray(v) && !ArrayBuffer.isView(v)) {
      const cols = Object.entries(v as Record<string, unknown>);
      const n = cols.length ? (cols[0]![1] as unknown[] | undefined)?.length : undefined;
      if (n !== undefined && cols.every(([, c]) => Array.isArray(c) && c.length === n)) {
        row[key] = Array.from({ length: n }, (_, i) => Object.fromEntries(cols.map(([k, c]) => [k, (c as unknown[])[i]])));
      }
    }
  }
  return undefined;
}
