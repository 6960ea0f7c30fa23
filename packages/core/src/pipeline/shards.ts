/**
 * The output of an embedding run, and how to read it back.
 *
 * An output folder holds:
 * - `manifest.json` ({@link RunManifest}): the run's identity (config and dataset hashes), the committed shards,
 *   and how far the run got. It is rewritten atomically after each shard and is the commit point: a shard counts
 *   only once the manifest lists it.
 * - `shard-NNNNN.safetensors`: one float32 tensor per modality entry of each successful sample, under the key
 *   `<sampleIndex>.<modalityIndex>`, shape `[numEmbeddings, hiddenSize]`; the metadata names the run.
 * - `shard-NNNNN.jsonl` ({@link ShardIndexLine}): one line per successful sample: source line, token ids,
 *   labels, the placeholder slots of each modality and its safetensors key.
 * - `errors.jsonl` ({@link RunErrorLine}): one line per failed sample.
 *
 * Shard `k` covers the dataset samples `k * shardSize` to `(k + 1) * shardSize - 1`.
 * @module
 */
import { createReadStream, createWriteStream, promises as fs } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { MultimeditronError } from '../errors.js';
import { SafetensorsFile } from '../safetensors.js';
import type { HostTensor } from '../tensor.js';
import { TMP_SUFFIX, exists, syncDir, writeFileAtomic } from './internal/fsutil.js';
import type { RunConfig } from './run-config.js';

/** The `format` tag of the manifest and of the shards' safetensors metadata. */
export const EMBEDDINGS_FORMAT = 'multimeditron-embeddings';
/** Version of the output format described here. */
export const EMBEDDINGS_FORMAT_VERSION = 1;
/** File name of the run manifest. */
export const MANIFEST_FILE = 'manifest.json';
/** File name of the failed-sample log. */
export const ERRORS_FILE = 'errors.jsonl';

/** `shard-00012` for shard 12. */
export function shardBaseName(shard: number): string {
  return `shard-${String(shard).padStart(5, '0')}`;
}

/** The safetensors key of a modality entry's embeddings: `<sampleIndex>.<modalityIndex>`. */
export function embeddingKey(sampleIndex: number, modalityIndex: number): string {
  return `${sampleIndex}.${modalityIndex}`;
}

/** The placeholder slots of one modality entry of a sample, as stored in the shard index. */
export interface ShardModalitySlot {
  /** Position of the entry in the sample's `modalities` list. */
  modalityIndex: number;
  /** The modality type (`image`, `audio`, ...). */
  type: string;
  /** First token position of the entry's slots in `inputIds`. */
  start: number;
  /** One past the last slot (`end - start` = numEmbeddings). */
  end: number;
  /** The safetensors key holding its embeddings (`<sampleIndex>.<modalityIndex>`). */
  key: string;
  /** Shape of the stored tensor: `[numEmbeddings, hiddenSize]`. */
  shape: [number, number];
}

/** One line of a shard's `.jsonl` index: one successfully embedded sample. */
export interface ShardIndexLine {
  /** 0-based index of the sample in the dataset. */
  sampleIndex: number;
  /** 1-based line (JSONL) or row (Parquet) of the sample in the dataset file. */
  line: number;
  /** `text` (pretraining) or `conversations` (instruction) sample. */
  kind: 'text' | 'conversations';
  /** Token ids, placeholders expanded to their slots (no padding). */
  inputIds: number[];
  /** Length of the attention mask (= `inputIds.length`: samples are stored unpadded). */
  attentionMaskLength: number;
  /** Training labels (`-100` on slots, padding and non-assistant turns). */
  labels: number[];
  /** True when the sample was cut to `maxLength`. */
  truncated: boolean;
  /** The slots of each modality entry, in `modalities` order. */
  modalities: ShardModalitySlot[];
}

/** Where a sample failed. */
export type RunErrorStage = 'dataset' | 'load' | 'process' | 'worker' | 'collate' | 'embed';

/** One line of `errors.jsonl`: a sample that could not be embedded. */
export interface RunErrorLine {
  sampleIndex: number;
  /** 1-based line (JSONL) or row (Parquet). */
  line: number;
  /** The error's code (`E_INPUT`, `E_DATASET`, `E_WORKER`, ...). */
  code: string;
  message: string;
  /** The file concerned: an input file, or the dataset. */
  file?: string;
  /** Which step failed. */
  stage: RunErrorStage;
  /** The shard whose range covers the sample. */
  shard: number;
}

/** A committed shard, as listed in the manifest. */
export interface ShardInfo {
  shard: number;
  /** File names, relative to the output folder. */
  safetensors: string;
  index: string;
  /** First dataset sample index of the shard's range. */
  firstSample: number;
  /** One past the last sample index the shard covers. */
  endSample: number;
  /** Samples stored in the shard. */
  samples: number;
  /** Samples of the range that failed (in errors.jsonl). */
  errors: number;
  /** Size of the safetensors file in bytes. */
  bytes: number;
}

/** `manifest.json`: identity and progress of a run. */
export interface RunManifest {
  format: typeof EMBEDDINGS_FORMAT;
  formatVersion: number;
  /** `<configHash[0:16]>-<datasetHash[0:16]>`. */
  runId: string;
  /** sha256 of the run config (canonical JSON, defaults applied, without `batch.workers`, `description`, `$schema`). */
  configHash: string;
  dataset: {
    /** The dataset path as given to the run. */
    file: string;
    sha256: string;
    size: number;
  };
  /** The run config as validated (paths as written), without `batch.workers`, `description`, `$schema`. */
  config: RunConfig;
  /** The modalities with their config defaults applied. */
  modalities: Array<{ modelType: string; modalityType: string; hiddenSize: number }>;
  /** The plugins that were loaded (informational). */
  plugins: Array<{ name: string; version?: string }>;
  shardSize: number;
  createdAt: string;
  updatedAt: string;
  /** Committed shards, in order. */
  shards: ShardInfo[];
  /** Every sample index below this is either stored in a shard or listed in errors.jsonl. */
  coveredUntil: number;
  /** Samples stored, and samples failed, over the committed shards. */
  samples: number;
  errors: number;
  /** True once the whole dataset is covered. */
  complete: boolean;
}

/** The output folder is not a usable run folder (bad manifest, missing shard). */
export class RunStateError extends MultimeditronError {
  constructor(
    /** The output folder or file concerned. */
    readonly file: string,
    message: string,
    options: { cause?: unknown; suggestions?: string[] } = {},
  ) {
    super('E_RUN_STATE', `${file}: ${message}`, options);
  }
}

/** Reads `manifest.json` of an output folder; undefined when there is none. */
export async function readRunManifest(outDir: string): Promise<RunManifest | undefined> {
  const file = path.join(outDir, MANIFEST_FILE);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new RunStateError(file, `cannot read: ${(e as Error).message}`, { cause: e });
  }
  let m: RunManifest;
  try {
    m = JSON.parse(text) as RunManifest;
  } catch (e) {
    throw new RunStateError(file, `not valid JSON: ${(e as Error).message}`, { cause: e });
  }
  if (m?.format !== EMBEDDINGS_FORMAT || !Array.isArray(m.shards)) {
    throw new RunStateError(file, `not a ${EMBEDDINGS_FORMAT} manifest`);
  }
  if (m.formatVersion !== EMBEDDINGS_FORMAT_VERSION) {
    throw new RunStateError(file, `format version ${m.formatVersion} is not supported (this core reads ${EMBEDDINGS_FORMAT_VERSION})`);
  }
  return m;
}

/** Writes the manifest atomically (the run's commit point). */
export async function writeRunManifest(outDir: string, manifest: RunManifest): Promise<void> {
  await writeFileAtomic(path.join(outDir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
  await syncDir(outDir);
}

/**
 * Reads the lines of a JSONL file one by one. With `tolerateCutLast`, an unparsable last line (one being
 * appended by a running run, or cut by a kill) is skipped instead of being an error.
 */
async function* jsonLines<T>(file: string, tolerateCutLast = false): AsyncGenerator<T> {
  const rl = readline.createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
  let n = 0;
  let last = 0;
  let bad: { line: number; error: Error } | undefined;
  try {
    for await (const line of rl) {
      n++;
      if (!line.trim()) continue;
      last = n;
      if (bad) break;
      try {
        yield JSON.parse(line) as T;
      } catch (e) {
        bad = { line: n, error: e as Error };
        if (!tolerateCutLast) break;
      }
    }
  } finally {
    rl.close();
  }
  if (bad && (!tolerateCutLast || bad.line !== last)) {
    throw new RunStateError(`${file}:${bad.line}`, `not valid JSON: ${bad.error.message}`, { cause: bad.error });
  }
}

/** Reads `errors.jsonl` of an output folder (only the errors of committed shards). */
export async function readRunErrors(outDir: string): Promise<RunErrorLine[]> {
  const manifest = await readRunManifest(outDir);
  const file = path.join(outDir, ERRORS_FILE);
  if (!manifest || !(await exists(file))) return [];
  const committed = new Set(manifest.shards.map((s) => s.shard));
  const out: RunErrorLine[] = [];
  for await (const e of jsonLines<RunErrorLine>(file, true)) if (committed.has(e.shard)) out.push(e);
  return out;
}

/** A sample read back from the shards: its index line and its embeddings. */
export interface EmbeddedSample extends ShardIndexLine {
  /** The shard it is stored in. */
  shard: number;
  /** One tensor per modality entry, in `modalities` order (empty when `embeddings: false`). */
  embeddings: Array<HostTensor<Float32Array>>;
}

/** Options of {@link readShards}. */
export interface ReadShardsOptions {
  /** Read the embeddings too (default true). */
  embeddings?: boolean;
}

/**
 * Reads an output folder back, sample by sample in dataset order, from the shards the manifest lists (files of
 * an interrupted, uncommitted shard are ignored). Each shard's safetensors file is opened once and read
 * tensor by tensor, so memory stays bounded.
 */
export async function* readShards(outDir: string, options: ReadShardsOptions = {}): AsyncGenerator<EmbeddedSample> {
  const manifest = await readRunManifest(outDir);
  if (!manifest) throw new RunStateError(outDir, `no ${MANIFEST_FILE}: not an embedding output folder`);
  const withEmbeddings = options.embeddings ?? true;
  for (const info of manifest.shards) {
    const st = withEmbeddings ? await SafetensorsFile.open(path.join(outDir, info.safetensors)) : undefined;
    try {
      for await (const line of jsonLines<ShardIndexLine>(path.join(outDir, info.index))) {
        const embeddings: Array<HostTensor<Float32Array>> = [];
        if (st) {
          for (const slot of line.modalities) {
            const t = await st.read(slot.key);
            embeddings.push({ data: t.data as Float32Array, shape: t.shape });
          }
        }
        yield { ...line, shard: info.shard, embeddings };
      }
    } finally {
      await st?.close();
    }
  }
}

// ---- writer ---------------------------------------------------------------------------------------------

/** What the run hands a {@link ShardWriter} for one sample. */
export interface ShardSampleInput extends Omit<ShardIndexLine, 'modalities'> {
  modalities: Array<Omit<ShardModalitySlot, 'key' | 'shape'> & { embedding: HostTensor<Float32Array> }>;
}

/**
 * Writes one shard: its safetensors file and its JSONL index, streamed to temporary files as samples arrive
 * (memory stays flat whatever the shard size), then made final by {@link commit}: the safetensors file is
 * assembled (header, then the data), fsync'd and renamed, then the index is renamed. Nothing under the final
 * names exists before `commit`, and a killed writer leaves only `*.tmp` files.
 */
export class ShardWriter {
  private readonly header: Record<string, { dtype: 'F32'; shape: number[]; data_offsets: [number, number] }> = {};
  private offset = 0;
  private count = 0;
  private closed = false;

  private constructor(
    readonly outDir: string,
    readonly shard: number,
    private readonly metadata: Record<string, string>,
    private readonly dataTmp: string,
    private readonly data: fs.FileHandle,
    private readonly indexTmp: string,
    private readonly index: fs.FileHandle,
  ) {}

  /** Opens shard `shard` in `outDir`; `metadata` goes into the safetensors header (strings only). */
  static async open(outDir: string, shard: number, metadata: Record<string, string>): Promise<ShardWriter> {
    const base = path.join(outDir, shardBaseName(shard));
    const dataTmp = `${base}.safetensors.data.${process.pid}${TMP_SUFFIX}`;
    const indexTmp = `${base}.jsonl.${process.pid}${TMP_SUFFIX}`;
    const data = await fs.open(dataTmp, 'w');
    const index = await fs.open(indexTmp, 'w').catch(async (e) => {
      await data.close();
      throw e;
    });
    return new ShardWriter(outDir, shard, metadata, dataTmp, data, indexTmp, index);
  }

  /** Samples added so far. */
  get samples(): number {
    return this.count;
  }

  /** Appends one sample: its embeddings to the data, its line to the index. */
  async add(sample: ShardSampleInput): Promise<ShardIndexLine> {
    if (this.closed) throw new MultimeditronError('E_RUN_STATE', `shard ${this.shard} is already committed`);
    const slots: ShardModalitySlot[] = [];
    for (const m of sample.modalities) {
      const key = embeddingKey(sample.sampleIndex, m.modalityIndex);
      const e = m.embedding;
      if (e.shape.length !== 2 || e.shape[0]! * e.shape[1]! !== e.data.length) {
        throw new MultimeditronError('E_SHAPE', `embedding ${key} has shape [${e.shape}] for ${e.data.length} values`);
      }
      const bytes = new Uint8Array(e.data.buffer, e.data.byteOffset, e.data.byteLength);
      await this.data.write(bytes, 0, bytes.byteLength);
      this.header[key] = { dtype: 'F32', shape: [...e.shape], data_offsets: [this.offset, this.offset + bytes.byteLength] };
      this.offset += bytes.byteLength;
      slots.push({ modalityIndex: m.modalityIndex, type: m.type, start: m.start, end: m.end, key, shape: [e.shape[0]!, e.shape[1]!] });
    }
    const line: ShardIndexLine = {
      sampleIndex: sample.sampleIndex,
      line: sample.line,
      kind: sample.kind,
      inputIds: sample.inputIds,
      attentionMaskLength: sample.attentionMaskLength,
      labels: sample.labels,
      truncated: sample.truncated,
      modalities: slots,
    };
    await this.index.write(`${JSON.stringify(line)}\n`);
    this.count++;
    return line;
  }

  /**
   * Makes the shard final (safetensors first, index last) and returns its file names and the safetensors size.
   * `metadata` is added to the safetensors metadata given to {@link open}.
   */
  async commit(metadata: Record<string, string> = {}): Promise<{ safetensors: string; index: string; bytes: number }> {
    if (this.closed) throw new MultimeditronError('E_RUN_STATE', `shard ${this.shard} is already committed`);
    this.closed = true;
    const base = shardBaseName(this.shard);
    const stFile = path.join(this.outDir, `${base}.safetensors`);
    const idxFile = path.join(this.outDir, `${base}.jsonl`);
    const stTmp = `${stFile}.${process.pid}${TMP_SUFFIX}`;
    try {
      return await this.finish(stTmp, stFile, idxFile, metadata);
    } catch (e) {
      // leave no half-written file behind (the next run would remove them, but a library caller may not rerun)
      await this.data.close().catch(() => undefined);
      await this.index.close().catch(() => undefined);
      await Promise.all([this.dataTmp, this.indexTmp, stTmp].map((f) => fs.rm(f, { force: true })));
      throw e;
    }
  }

  private async finish(stTmp: string, stFile: string, idxFile: string, metadata: Record<string, string>) {
    await this.data.sync();
    await this.data.close();
    await this.index.sync();
    await this.index.close();
    let json = JSON.stringify({ __metadata__: { ...this.metadata, ...metadata, samples: String(this.count) }, ...this.header });
    json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
    const head = Buffer.alloc(8 + Buffer.byteLength(json));
    head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)), 0);
    head.write(json, 8, 'utf8');
    // header then data through one pipeline, so that every stream error (ENOSPC, EACCES) rejects here
    await pipeline(
      Readable.from((async function* (dataTmp: string) {
        yield head;
        yield* createReadStream(dataTmp, { highWaterMark: 1 << 20 });
      })(this.dataTmp)),
      createWriteStream(stTmp),
    );
    const fh = await fs.open(stTmp, 'r+');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(stTmp, stFile);
    await fs.rm(this.dataTmp, { force: true });
    await fs.rename(this.indexTmp, idxFile);
    await syncDir(this.outDir);
    return { safetensors: path.basename(stFile), index: path.basename(idxFile), bytes: head.length + this.offset };
  }

  /** Drops the shard: closes and removes its temporary files. */
  async abort(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.data.close().catch(() => undefined);
    await this.index.close().catch(() => undefined);
    await fs.rm(this.dataTmp, { force: true });
    await fs.rm(this.indexTmp, { force: true });
  }
}
