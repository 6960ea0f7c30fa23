/**
 * Arrow IPC reading for Hugging Face `datasets` folders (`Dataset.save_to_disk` / `DatasetDict.save_to_disk`)
 * and single `.arrow` files.
 *
 * A saved `Dataset` is a folder with `state.json` (whose `_data_files` lists the shards, in order),
 * `dataset_info.json` and the shards themselves, Arrow IPC *streaming* files of record batches. A saved
 * `DatasetDict` is a folder with `dataset_dict.json` (`{"splits": [...]}`) and one such folder per split.
 *
 * The reader walks the IPC messages itself and reads only their headers until it reaches a record batch it
 * needs: the bodies of batches before `startIndex` are never read, and a batch it needs is decoded with
 * `apache-arrow` on its own, so memory stays bounded by one record batch (plus the dictionaries, if any).
 * A file that is not Arrow, that is cut short, or that `state.json` lists but that is missing, is an
 * {@link InputError} naming it. A record batch whose body cannot be decoded, or a row that cannot be
 * converted, is reported for its rows only; the stream goes on.
 * @module
 */
import { promises as fs, statSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import {
  DataType, Message, MessageHeader, RecordBatchReader, tableFromIPC, Type, type Field, type RecordBatch, type Schema, type Vector,
} from 'apache-arrow';
import { InputError } from '../errors.js';

/** `state.json`: the file of a saved `Dataset` that lists its Arrow shards. */
export const HF_STATE_FILE = 'state.json';
/** `dataset_dict.json`: the file of a saved `DatasetDict` that lists its splits. */
export const HF_DATASET_DICT_FILE = 'dataset_dict.json';
/** `dataset_info.json`: the features and metadata of a saved `Dataset`. */
export const HF_DATASET_INFO_FILE = 'dataset_info.json';
/** The split a `DatasetDict` folder is read from unless another is asked for. */
export const HF_DEFAULT_SPLIT = 'train';

/** A Hugging Face dataset on disk, resolved to its Arrow files (see {@link resolveHfDataset}). */
export interface HfDatasetSource {
  /** `dataset`: a `Dataset.save_to_disk` folder; `dataset-dict`: a `DatasetDict` one; `arrow-file`: one `.arrow` file. */
  kind: 'dataset' | 'dataset-dict' | 'arrow-file';
  /** The path as given. */
  path: string;
  /** The folder holding `state.json` (for a `DatasetDict`, the split's folder), or the Arrow file's folder. */
  dir: string;
  /** The split read: the chosen one of a `DatasetDict`, or the `_split` a `Dataset` records (if any). */
  split?: string;
  /** The splits of a `DatasetDict`, as listed in `dataset_dict.json`. */
  splits?: string[];
  /** The Arrow files, in order (paths built on {@link path}). */
  files: string[];
  /** Absolute folder that relative path values resolve against: the folder given (for a `DatasetDict`, its root), or the Arrow file's folder. */
  baseDir: string;
}

function fileExists(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** True when `dir` is a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`. Synchronous. */
export function isHfDatasetDir(dir: string): boolean {
  return fileExists(path.join(dir, HF_STATE_FILE)) || fileExists(path.join(dir, HF_DATASET_DICT_FILE));
}

async function readJsonFile(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new InputError(file, err.code === 'ENOENT' ? 'not found' : `cannot read: ${err.message}`, { cause: e });
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new InputError(file, `invalid JSON: ${(e as Error).message}`, { cause: e });
  }
}

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/**
 * Resolves a Hugging Face dataset on disk to the Arrow files to read, in order: a `Dataset.save_to_disk`
 * folder (or its `state.json`), a `DatasetDict.save_to_disk` folder (or its `dataset_dict.json`; the split is
 * `options.split`, default `train`), or a single `.arrow` file. Checks that every file `state.json` lists
 * exists. Throws {@link InputError} for a missing path, a folder of another kind, a bad `state.json` or
 * `dataset_dict.json`, an unknown split (the message lists the available ones) or a missing data file.
 */
export async function resolveHfDataset(p: string, options: { split?: string } = {}): Promise<HfDatasetSource> {
  const st = await fs.stat(p).catch((e: NodeJS.ErrnoException) => {
    throw new InputError(p, e.code === 'ENOENT' ? 'dataset not found' : `cannot read: ${e.message}`, { cause: e });
  });
  let dir = p;
  if (st.isFile()) {
    const base = path.basename(p);
    if (base !== HF_STATE_FILE && base !== HF_DATASET_DICT_FILE) {
      return { kind: 'arrow-file', path: p, dir: path.dirname(p), files: [p], baseDir: path.dirname(path.resolve(p)) };
    }
    dir = path.dirname(p);
  } else if (!st.isDirectory()) {
    throw new InputError(p, 'is neither a file nor a folder');
  }
  const baseDir = path.resolve(dir);
  const statePath = path.join(dir, HF_STATE_FILE);
  const dictPath = path.join(dir, HF_DATASET_DICT_FILE);
  if (fileExists(statePath) && path.basename(p) !== HF_DATASET_DICT_FILE) {
    const { files, split } = await readState(dir);
    if (options.split !== undefined && split !== undefined && options.split !== split) {
      throw new InputError(dir, `is a saved Dataset of split "${split}", not "${options.split}"`, {
        suggestions: [`Pass the DatasetDict folder that holds split "${options.split}", or drop the split option.`],
      });
    }
    return { kind: 'dataset', path: p, dir, ...(split !== undefined ? { split } : {}), files, baseDir };
  }
  if (fileExists(dictPath)) {
    const json = await readJsonFile(dictPath);
    const splits = isObject(json) ? json['splits'] : undefined;
    if (!Array.isArray(splits) || !splits.every((s): s is string => typeof s === 'string' && s.length > 0)) {
      throw new InputError(dictPath, '"splits" must be an array of split names');
    }
    const split = options.split ?? HF_DEFAULT_SPLIT;
    if (!splits.includes(split)) {
      throw new InputError(dir, `DatasetDict has no split "${split}" (available: ${splits.join(', ') || 'none'})`, {
        suggestions: splits.length ? [`Pass { split: "${splits[0]}" } (CLI: --split ${splits[0]}) to read another split.`] : [],
      });
    }
    if (split.includes('/') || split.includes('\\') || split === '.' || split === '..') {
      throw new InputError(dictPath, `split name "${split}" is not a folder name`);
    }
    const splitDir = path.join(dir, split);
    if (!fileExists(path.join(splitDir, HF_STATE_FILE))) {
      throw new InputError(splitDir, `split "${split}" is listed in ${dictPath} but its folder has no ${HF_STATE_FILE}`);
    }
    const { files } = await readState(splitDir);
    return { kind: 'dataset-dict', path: p, dir: splitDir, split, splits: [...splits], files, baseDir };
  }
  throw new InputError(dir, `is not a Hugging Face datasets folder: it has neither ${HF_STATE_FILE} nor ${HF_DATASET_DICT_FILE}`, {
    suggestions: ['Point at the folder given to Dataset.save_to_disk / DatasetDict.save_to_disk, or at a .jsonl, .parquet or .arrow file.'],
  });
}

/** Reads a `state.json`: its data files (checked to exist) and its split. */
async function readState(dir: string): Promise<{ files: string[]; split?: string }> {
  const statePath = path.join(dir, HF_STATE_FILE);
  const state = await readJsonFile(statePath);
  if (!isObject(state)) throw new InputError(statePath, 'must be a JSON object');
  const list = state['_data_files'];
  if (!Array.isArray(list)) throw new InputError(statePath, '"_data_files" must be an array of {filename}');
  const indices = state['_indices_data_files'];
  if (Array.isArray(indices) && indices.length > 0) {
    throw new InputError(statePath, 'has an indices mapping ("_indices_data_files"), which is not supported', {
      suggestions: ['Save the dataset again with a recent `datasets` (save_to_disk flattens the indices), or call ds.flatten_indices() first.'],
    });
  }
  const files = list.map((entry, i) => {
    const name = isObject(entry) ? entry['filename'] : undefined;
    if (typeof name !== 'string' || !name) throw new InputError(statePath, `"_data_files"[${i}] must be {"filename": "<file>.arrow"}`);
    const parts = name.split(/[\\/]/);
    if (path.isAbsolute(name) || path.win32.isAbsolute(name) || parts.includes('..')) {
      throw new InputError(statePath, `"_data_files"[${i}]: "${name}" is not a file name inside the dataset folder`);
    }
    return path.join(dir, name);
  });
  const missing: string[] = [];
  await Promise.all(files.map(async (f) => {
    const ok = await fs.stat(f).then((s) => s.isFile(), () => false);
    if (!ok) missing.push(f);
  }));
  if (missing.length) {
    const first = files.find((f) => missing.includes(f))!;
    throw new InputError(first, `data file listed in ${statePath} not found${missing.length > 1 ? ` (${missing.length - 1} more missing)` : ''}`);
  }
  const split = state['_split'];
  return { files, ...(typeof split === 'string' && split ? { split } : {}) };
}

// ---------------------------------------------------------------------------------------------------------
// Arrow IPC framing

/** A record batch found in an Arrow file, before its body is read. */
interface BatchHeader {
  /** Rows in the batch. */
  numRows: number;
  /** Byte offset of the encapsulated message (continuation marker included). */
  offset: number;
  /** Byte length of the whole message: prefix, metadata and body. */
  byteLength: number;
  /**
   * At most this many list/map elements can be in the batch (uncompressed, each element of a non-Null type
   * takes at least a bit of the body); `Infinity` when the body is compressed.
   */
  maxElements: number;
}

const ARROW_MAGIC = 'ARROW1';

/**
 * Bounds-checks the flatbuffer of an Arrow IPC message (Message.fbs / Schema.fbs) before apache-arrow decodes
 * it: flatbuffers read out of range as zeros instead of failing, so a corrupt vector length would make the
 * decoder loop for billions of entries. Checks every table, vector and string the decoder follows, with a
 * nesting limit. Throws a plain Error on the first problem.
 */
class MessageVerifier {
  private readonly view: DataView;
  private budget: number;

  constructor(private readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.budget = bytes.byteLength; // elements visited: a valid buffer cannot hold more
  }

  private fail(what: string): never {
    throw new Error(`corrupt message metadata (${what})`);
  }

  private u32(at: number): number {
    if (at < 0 || at + 4 > this.bytes.byteLength) this.fail(`offset ${at} out of range`);
    return this.view.getUint32(at, true);
  }

  private spend(n: number): void {
    this.budget -= n;
    if (this.budget < 0) this.fail('too many elements');
  }

  /** Checks the table at `pos`; returns a function giving the absolute position of slot `i`, or 0 when absent. */
  private table(pos: number): (slot: number) => number {
    this.spend(1);
    const len = this.bytes.byteLength;
    const soff = this.u32(pos) | 0;
    const vt = pos - soff;
    if (vt < 0 || vt + 4 > len) this.fail('vtable out of range');
    const vtSize = this.view.getUint16(vt, true);
    const tableSize = this.view.getUint16(vt + 2, true);
    if (vtSize < 4 || vtSize % 2 || vt + vtSize > len || pos + tableSize > len) this.fail('vtable size');
    return (slot: number) => {
      const o = 4 + 2 * slot;
      if (o + 2 > vtSize) return 0;
      const rel = this.view.getUint16(vt + o, true);
      if (rel === 0) return 0;
      if (rel >= tableSize) this.fail('field outside its table');
      return pos + rel;
    };
  }

  /** Follows the offset at `at` (a table, vector or string reference). */
  private deref(at: number): number {
    const target = at + this.u32(at);
    if (target >= this.bytes.byteLength) this.fail('reference out of range');
    return target;
  }

  /** Checks a vector of `elementSize`-byte elements; returns its element positions' start and length. */
  private vector(at: number, elementSize: number): { start: number; length: number } {
    const v = this.deref(at);
    const length = this.u32(v);
    const start = v + 4;
    if (start + length * elementSize > this.bytes.byteLength) this.fail('vector longer than the buffer');
    this.spend(length);
    return { start, length };
  }

  private tables(at: number, each: (pos: number, depth: number) => void, depth: number): void {
    if (!at) return;
    const { start, length } = this.vector(at, 4);
    for (let k = 0; k < length; k++) each(this.deref(start + 4 * k), depth);
  }

  private keyValues(at: number): void {
    this.tables(at, (pos) => {
      const kv = this.table(pos);
      for (const s of [0, 1]) if (kv(s)) this.vector(kv(s), 1);
    }, 0);
  }

  private field(pos: number, depth: number): void {
    if (depth > 64) this.fail('fields nested too deep');
    const f = this.table(pos);
    if (f(0)) this.vector(f(0), 1); // name
    if (f(3)) {
      const type = this.table(this.deref(f(3)));
      const typeType = f(2) ? this.bytes[f(2)]! : 0;
      if (typeType === Type.Union && type(1)) this.vector(type(1), 4); // typeIds
    }
    if (f(4)) {
      const dict = this.table(this.deref(f(4)));
      if (dict(1)) this.table(this.deref(dict(1))); // indexType
    }
    this.tables(f(5), (p, d) => this.field(p, d), depth + 1);
    this.keyValues(f(6));
  }

  private recordBatch(pos: number): void {
    const rb = this.table(pos);
    if (rb(1)) this.vector(rb(1), 16); // nodes
    if (rb(2)) this.vector(rb(2), 16); // buffers
    if (rb(3)) this.table(this.deref(rb(3))); // compression
    if (rb(4)) this.vector(rb(4), 8); // variadicBufferCounts
  }

  private schema(pos: number): void {
    const s = this.table(pos);
    this.tables(s(1), (p, d) => this.field(p, d), 0);
    this.keyValues(s(2));
    if (s(3)) this.vector(s(3), 8);
  }

  /** Checks the footer of the IPC file format (File.fbs). */
  verifyFooter(): void {
    const footer = this.table(this.u32(0));
    if (!footer(1)) this.fail('footer without schema');
    this.schema(this.deref(footer(1)));
    if (footer(2)) this.vector(footer(2), 24); // dictionaries
    if (footer(3)) this.vector(footer(3), 24); // recordBatches
    this.keyValues(footer(4));
  }

  /** Checks the whole message. */
  verify(): void {
    const msg = this.table(this.u32(0));
    const headerType = msg(1) ? this.bytes[msg(1)]! : 0;
    if (msg(2)) {
      const header = this.deref(msg(2));
      if (headerType === MessageHeader.Schema) {
        this.schema(header);
      } else if (headerType === MessageHeader.RecordBatch) {
        this.recordBatch(header);
      } else if (headerType === MessageHeader.DictionaryBatch) {
        const d = this.table(header);
        if (d(1)) this.recordBatch(this.deref(d(1)));
      }
    }
    this.keyValues(msg(4));
  }
}

/** Frames flatbuffer message metadata as an encapsulated IPC message (continuation, length, padded metadata). */
function encapsulate(meta: Uint8Array): Uint8Array {
  const padded = (meta.byteLength + 7) & ~7;
  const out = new Uint8Array(8 + padded);
  const view = new DataView(out.buffer);
  view.setInt32(0, -1, true);
  view.setInt32(4, padded, true);
  out.set(meta, 8);
  return out;
}

async function readAt(fh: FileHandle, position: number, length: number): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  let off = 0;
  while (off < length) {
    const { bytesRead } = await fh.read(buf, off, length - off, position + off);
    if (bytesRead === 0) break;
    off += bytesRead;
  }
  return off === length ? buf : buf.subarray(0, off);
}

/**
 * One Arrow IPC file (streaming format, or the random-access "file" format, whose messages are read the same
 * way). Messages are located from their headers only; {@link load} reads and decodes one record batch.
 */
class ArrowIpcFile {
  private pos = 0;
  private done = false;
  private messages = 0;
  /** The schema message, raw. */
  private schemaBytes: Uint8Array = new Uint8Array(0);
  /** The dictionary messages in force, raw, in stream order. */
  private dictionaries: Array<{ id: number; bytes: Uint8Array }> = [];
  /** Whether every row takes body bytes (some column is not of the Null type): bounds a batch's row count. */
  private rowsNeedBytes = false;

  private constructor(readonly file: string, private readonly fh: FileHandle, private readonly size: number) {}

  /** Opens the file and reads its schema. Throws {@link InputError} when it is not Arrow IPC. */
  static async open(file: string): Promise<ArrowIpcFile> {
    let fh: FileHandle;
    try {
      fh = await fs.open(file, 'r');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new InputError(file, err.code === 'ENOENT' ? 'Arrow file not found' : `cannot read: ${err.message}`, { cause: e });
    }
    try {
      const { size } = await fh.stat();
      const f = new ArrowIpcFile(file, fh, size);
      const magic = await readAt(fh, 0, 8);
      const isFileFormat = magic.length >= 6 && Buffer.from(magic.subarray(0, 6)).toString('latin1') === ARROW_MAGIC;
      if (isFileFormat) f.pos = 8;
      const first = await f.nextMessage();
      let schema: Schema;
      if (first?.headerType === MessageHeader.Schema) {
        try {
          schema = first.message.header() as Schema;
        } catch (e) {
          throw new InputError(file, `corrupt Arrow schema: ${(e as Error).message}`, { cause: e });
        }
        f.schemaBytes = await readAt(fh, first.offset, first.byteLength);
      } else if (isFileFormat && first) {
        // the file format keeps the schema in its footer; some writers (apache-arrow JS) do not repeat it up front
        schema = await f.footerSchema();
        f.schemaBytes = encapsulate(Message.encode(Message.from(schema)));
        f.pos = first.offset;
      } else {
        throw f.notArrow('it does not start with an Arrow schema message');
      }
      f.rowsNeedBytes = schema.fields.some((x: Field) => needsBytes(x.type));
      return f;
    } catch (e) {
      await fh.close().catch(() => {});
      throw e;
    }
  }

  /** The schema of an IPC file-format file, from its footer (checked before apache-arrow decodes it). */
  private async footerSchema(): Promise<Schema> {
    const tail = this.size >= 18 ? await readAt(this.fh, this.size - 10, 10) : new Uint8Array(0);
    if (tail.length < 10 || Buffer.from(tail.subarray(4)).toString('latin1') !== ARROW_MAGIC) {
      throw this.truncated('the Arrow file has no schema message and no footer (cut short?)');
    }
    const footerLength = new DataView(tail.buffer, tail.byteOffset, 4).getInt32(0, true);
    if (footerLength <= 0 || footerLength > this.size - 18) throw new InputError(this.file, 'corrupt Arrow file: bad footer length');
    try {
      new MessageVerifier(await readAt(this.fh, this.size - 10 - footerLength, footerLength)).verifyFooter();
    } catch (e) {
      throw new InputError(this.file, `corrupt Arrow file footer: ${(e as Error).message}`, { cause: e });
    }
    const handle = await fs.open(this.file, 'r');
    try {
      const reader = await RecordBatchReader.from(handle);
      await reader.open();
      if (!reader.schema) throw new Error('no schema');
      return reader.schema;
    } catch (e) {
      throw new InputError(this.file, `corrupt Arrow file footer: ${(e as Error).message}`, { cause: e });
    } finally {
      await handle.close().catch(() => {});
    }
  }

  private notArrow(why: string): InputError {
    return new InputError(this.file, `not an Arrow IPC stream or file (${why})`, {
      suggestions: ['Hugging Face datasets folders are written by Dataset.save_to_disk(); their .arrow files are Arrow IPC streams.'],
    });
  }

  private truncated(why: string): InputError {
    return new InputError(this.file, `truncated Arrow stream: ${why}`, {
      suggestions: ['The file was cut short (an interrupted write or copy?): save or copy the dataset again.'],
    });
  }

  /** Reads the next message's header; `undefined` at the end-of-stream marker. */
  private async nextMessage(): Promise<{ headerType: MessageHeader; message: Message; offset: number; byteLength: number } | undefined> {
    if (this.done) return undefined;
    const isFirst = this.messages === 0;
    const offset = this.pos;
    const prefix = await readAt(this.fh, offset, 8);
    if (prefix.length === 0) {
      if (isFirst) throw this.notArrow('the file is empty');
      throw this.truncated(`it ends at byte ${offset} without the end-of-stream marker`);
    }
    if (prefix.length < 4) {
      if (isFirst) throw this.notArrow('the file is too short');
      throw this.truncated(`it ends inside a message header at byte ${offset}`);
    }
    const view = new DataView(prefix.buffer, prefix.byteOffset, prefix.byteLength);
    let metaLength: number;
    let metaStart: number;
    const word = view.getInt32(0, true);
    if (word === -1) {
      if (prefix.length < 8) throw this.truncated(`it ends inside a message header at byte ${offset}`);
      metaLength = view.getInt32(4, true);
      metaStart = offset + 8;
    } else {
      // pre-1.0 streams have no continuation marker
      metaLength = word;
      metaStart = offset + 4;
    }
    if (metaLength === 0) {
      this.done = true;
      this.pos = metaStart;
      if (isFirst) throw this.notArrow('it holds no schema');
      return undefined;
    }
    if (metaLength < 0 || metaStart + metaLength > this.size) {
      if (isFirst && word !== -1) throw this.notArrow('no Arrow message at its start');
      if (metaLength < 0) throw new InputError(this.file, `corrupt Arrow stream: invalid message length at byte ${offset}`);
      throw this.truncated(`a message at byte ${offset} needs ${metaLength} metadata bytes, the file ends at ${this.size}`);
    }
    const meta = await readAt(this.fh, metaStart, metaLength);
    let message: Message;
    try {
      new MessageVerifier(meta).verify();
      message = Message.decode(meta);
    } catch (e) {
      if (isFirst) throw this.notArrow(`its first message cannot be decoded: ${(e as Error).message}`);
      throw new InputError(this.file, `corrupt Arrow stream: the message at byte ${offset} cannot be decoded: ${(e as Error).message}`, { cause: e });
    }
    const headerType = message.headerType;
    const bodyLength = Number(message.bodyLength);
    if (![MessageHeader.Schema, MessageHeader.RecordBatch, MessageHeader.DictionaryBatch].includes(headerType) || !Number.isSafeInteger(bodyLength) || bodyLength < 0) {
      if (isFirst) throw this.notArrow('its first message is not an Arrow message');
      throw new InputError(this.file, `corrupt Arrow stream: unexpected message at byte ${offset}`);
    }
    const end = metaStart + metaLength + bodyLength;
    if (end > this.size) {
      throw this.truncated(`the message at byte ${offset} needs ${end - offset} bytes, the file ends after ${this.size - offset}`);
    }
    this.messages++;
    this.pos = end;
    return { headerType, message, offset, byteLength: end - offset };
  }

  /** The next record batch's header (dictionaries on the way are loaded); `undefined` at the end of the stream. */
  async nextBatch(): Promise<BatchHeader | undefined> {
    for (;;) {
      const m = await this.nextMessage();
      if (!m) return undefined;
      if (m.headerType === MessageHeader.RecordBatch) {
        let numRows: number;
        let compressed: boolean;
        try {
          const h = m.message.header() as { length: number | bigint; compression: unknown };
          numRows = Number(h.length);
          compressed = h.compression != null;
        } catch (e) {
          throw new InputError(this.file, `corrupt Arrow stream: record batch header at byte ${m.offset}: ${(e as Error).message}`, { cause: e });
        }
        // Uncompressed, each row of a non-Null column takes at least one bit of the body.
        const bodyLength = Number(m.message.bodyLength);
        if (!Number.isSafeInteger(numRows) || numRows < 0 || (this.rowsNeedBytes && !compressed && numRows > bodyLength * 8 + 64)) {
          throw new InputError(this.file, `corrupt Arrow stream: the record batch at byte ${m.offset} claims ${numRows} rows for a ${bodyLength}-byte body`);
        }
        return { numRows, offset: m.offset, byteLength: m.byteLength, maxElements: compressed ? Infinity : bodyLength * 8 + 1024 };
      }
      if (m.headerType === MessageHeader.DictionaryBatch) {
        let id: number;
        let isDelta: boolean;
        try {
          const h = m.message.header() as { id: number; isDelta: boolean };
          id = Number(h.id);
          isDelta = Boolean(h.isDelta);
        } catch (e) {
          throw new InputError(this.file, `corrupt Arrow stream: dictionary header at byte ${m.offset}: ${(e as Error).message}`, { cause: e });
        }
        const bytes = await readAt(this.fh, m.offset, m.byteLength);
        if (!isDelta) this.dictionaries = this.dictionaries.filter((d) => d.id !== id);
        this.dictionaries.push({ id, bytes });
      }
      // any other message (a repeated schema) carries no rows: skip it
    }
  }

  /** Reads and decodes one record batch (with the schema and dictionaries in force). Throws a plain Error when it cannot be decoded. */
  async load(h: BatchHeader): Promise<RecordBatch> {
    const head = this.schemaBytes.byteLength + this.dictionaries.reduce((n, d) => n + d.bytes.byteLength, 0);
    const buf = new Uint8Array(head + h.byteLength);
    buf.set(this.schemaBytes, 0);
    let off = this.schemaBytes.byteLength;
    for (const d of this.dictionaries) {
      buf.set(d.bytes, off);
      off += d.bytes.byteLength;
    }
    let n = 0;
    while (n < h.byteLength) {
      const { bytesRead } = await this.fh.read(buf, head + n, h.byteLength - n, h.offset + n);
      if (bytesRead === 0) throw this.truncated(`the record batch at byte ${h.offset} is cut short`);
      n += bytesRead;
    }
    const batch = tableFromIPC(buf).batches[0];
    if (!batch || batch.numRows !== h.numRows) {
      throw new Error(`decoded ${batch ? batch.numRows : 0} rows, the header says ${h.numRows}`);
    }
    return batch;
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => {});
  }
}

/** Whether values of `type` take body bytes (every type but Null, and structs of Nulls only). */
function needsBytes(type: DataType): boolean {
  if (type.typeId === Type.Null) return false;
  if (type.typeId === Type.Struct) return (type.children as Field[]).some((c) => needsBytes(c.type));
  return true;
}

// ---------------------------------------------------------------------------------------------------------
// Arrow values -> plain JS

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);

function fromBigInt(v: bigint): number | bigint {
  return v <= MAX_SAFE && v >= MIN_SAFE ? Number(v) : v;
}

/**
 * How many more list/map elements a conversion may produce. Arrow JS does not check list offsets against the
 * child arrays, so a corrupt offset could otherwise make one list billions of elements long.
 */
export interface ConversionBudget {
  elements: number;
}

function spend(budget: ConversionBudget | undefined, n: number, elementType: DataType | undefined): void {
  if (!budget || (elementType && !needsBytes(elementType))) return;
  budget.elements -= n;
  if (budget.elements < 0) throw new Error('lists longer than the record batch can hold (corrupt list offsets?)');
}

/** Any value of unknown Arrow type (unions) to plain JS. */
function genericToJs(v: unknown, budget?: ConversionBudget): unknown {
  if (v === null || v === undefined) return null;
  if (typeof v === 'bigint') return fromBigInt(v);
  if (v instanceof Uint8Array) return v.slice();
  if (typeof v !== 'object') return v;
  const o = v as { type?: unknown; length?: number; get?: (i: number) => unknown; [Symbol.iterator]?: unknown };
  if (DataType.isDataType(o.type) && typeof o.get === 'function' && typeof o.length === 'number') {
    return arrayToJs(v as Vector, (o.type as DataType), budget);
  }
  if (Object.prototype.toString.call(v) === '[object Row]' && typeof o[Symbol.iterator] === 'function') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of v as Iterable<[unknown, unknown]>) out[String(k)] = genericToJs(x, budget);
    return out;
  }
  return v;
}

function arrayToJs(vec: Vector, elementType: DataType, budget?: ConversionBudget): unknown[] {
  spend(budget, vec.length, elementType);
  const out = new Array<unknown>(vec.length);
  for (let k = 0; k < vec.length; k++) out[k] = arrowValueToJs(vec.get(k), elementType, budget);
  return out;
}

/**
 * Converts one value read from an Arrow vector (`vector.get(i)`) to plain JS, by its Arrow type: structs to
 * objects, lists to arrays, maps to objects, binaries to (copied) `Uint8Array`s, 64-bit integers to numbers
 * when they are safe integers (else `bigint`), nulls to `null`. Strings, booleans and floats stay as they are.
 * `budget`, when given, bounds the number of list/map elements produced (an Error past it).
 */
export function arrowValueToJs(value: unknown, type: DataType, budget?: ConversionBudget): unknown {
  if (value === null || value === undefined) return null;
  switch (type.typeId) {
    case Type.Null:
      return null;
    case Type.Binary:
    case Type.LargeBinary:
    case Type.FixedSizeBinary:
    case Type.BinaryView:
      return value instanceof Uint8Array ? value.slice() : genericToJs(value, budget);
    case Type.List:
    case Type.LargeList:
    case Type.FixedSizeList:
      return arrayToJs(value as Vector, (type.children[0] as Field).type, budget);
    case Type.Struct: {
      const out: Record<string, unknown> = {};
      const fields = type.children as Field[];
      let j = 0;
      for (const [k, x] of value as Iterable<[string, unknown]>) {
        const f = fields[j++];
        out[k] = f ? arrowValueToJs(x, f.type, budget) : genericToJs(x, budget);
      }
      return out;
    }
    case Type.Map: {
      const entry = (type.children[0] as Field).type;
      const [keyField, valueField] = entry.children as Field[];
      const out: Record<string, unknown> = {};
      spend(budget, (value as { size?: number }).size ?? 0, entry);
      for (const [k, x] of value as Iterable<[unknown, unknown]>) {
        const key = keyField ? arrowValueToJs(k, keyField.type, budget) : k;
        out[String(key)] = valueField ? arrowValueToJs(x, valueField.type, budget) : genericToJs(x, budget);
      }
      return out;
    }
    case Type.Dictionary:
      return arrowValueToJs(value, (type as unknown as { dictionary: DataType }).dictionary, budget);
    default:
      return genericToJs(value, budget);
  }
}

/** Row `i` of a record batch as a plain object: one key per column (see {@link arrowValueToJs}). */
export function arrowRowToJs(batch: RecordBatch, i: number, budget?: ConversionBudget): Record<string, unknown> {
  const row: Record<string, unknown> = {};
  const fields = batch.schema.fields;
  for (let j = 0; j < fields.length; j++) {
    const col = batch.getChildAt(j);
    row[fields[j]!.name] = col ? arrowValueToJs(col.get(i), fields[j]!.type, budget) : null;
  }
  return row;
}

// ---------------------------------------------------------------------------------------------------------
// Rows across files

/** A record batch about to be converted (see `onRecordBatch` of {@link readArrowRows}). */
export interface RecordBatchInfo {
  /** The Arrow file. */
  file: string;
  /** 0-based index of the file among the dataset's files. */
  fileIndex: number;
  /** Number of files. */
  fileCount: number;
  /** 0-based index of the batch in its file. */
  index: number;
  /** First row (0-based over all files, inclusive). */
  rowStart: number;
  /** Last row (0-based over all files, exclusive). */
  rowEnd: number;
}

/** Options of {@link readArrowRows}. */
export interface ArrowRowsOptions {
  /** Skip the rows before this 0-based index (over all files): the batches before it are not read. */
  startIndex?: number;
  /** Stop after this many rows. */
  limit?: number;
  /** Called before each record batch whose rows are converted. */
  onRecordBatch?: (info: RecordBatchInfo) => void;
}

/** One row of {@link readArrowRows}: the row as a plain object, or why it could not be read. */
export interface ArrowRow {
  /** 0-based row index over all files. */
  index: number;
  /** The Arrow file holding it. */
  file: string;
  /** The row, one key per column. */
  row?: Record<string, unknown>;
  /** Why the row (or its record batch) could not be read. */
  error?: Error;
}

/**
 * Streams the rows of Arrow IPC files read one after the other, one record batch at a time. Throws
 * {@link InputError} for a file that is missing, not Arrow, or cut short; yields `error` rows for a record batch
 * that cannot be decoded or a row that cannot be converted.
 */
export async function* readArrowRows(files: readonly string[], options: ArrowRowsOptions = {}): AsyncGenerator<ArrowRow> {
  const start = Math.max(0, options.startIndex ?? 0);
  const end = options.limit === undefined ? Infinity : start + Math.max(0, options.limit);
  let rowStart = 0;
  for (let fi = 0; fi < files.length && rowStart < end; fi++) {
    const file = files[fi]!;
    const arrow = await ArrowIpcFile.open(file);
    try {
      for (let bi = 0; rowStart < end; bi++) {
        const h = await arrow.nextBatch();
        if (!h) break;
        const rowEnd = rowStart + h.numRows;
        const from = Math.max(rowStart, start);
        const to = Math.min(rowEnd, end);
        if (from < to) {
          options.onRecordBatch?.({ file, fileIndex: fi, fileCount: files.length, index: bi, rowStart, rowEnd });
          let batch: RecordBatch | undefined;
          let loadError: Error | undefined;
          try {
            batch = await arrow.load(h);
          } catch (e) {
            if (e instanceof InputError) throw e;
            loadError = new Error(`record batch ${bi} cannot be read: ${(e as Error)?.message ?? String(e)}`, { cause: e });
          }
          const budget: ConversionBudget = { elements: h.maxElements };
          for (let r = from; r < to; r++) {
            if (!batch) {
              yield { index: r, file, error: loadError! };
              continue;
            }
            let row: Record<string, unknown>;
            try {
              row = arrowRowToJs(batch, r - rowStart, budget);
            } catch (e) {
              yield { index: r, file, error: new Error(`row cannot be converted: ${(e as Error)?.message ?? String(e)}`, { cause: e }) };
              continue;
            }
            yield { index: r, file, row };
          }
          batch = undefined;
        }
        rowStart = rowEnd;
      }
    } finally {
      await arrow.close();
    }
  }
}

/**
 * Counts the rows of Arrow IPC files from their record-batch headers only (no body is read). Throws
 * {@link InputError} like {@link readArrowRows}.
 */
export async function countArrowRows(files: readonly string[]): Promise<number> {
  let n = 0;
  for (const file of files) {
    const arrow = await ArrowIpcFile.open(file);
    try {
      for (let h = await arrow.nextBatch(); h; h = await arrow.nextBatch()) n += h.numRows;
    } finally {
      await arrow.close();
    }
  }
  return n;
}
