/**
 * The frozen-encoder feature cache. In ALIGNMENT and END2END the encoders do not train, so the projector inputs
 * of a sample never change: the trainer computes them once and later epochs skip the encoder. Entries live in
 * memory up to a byte bound, then spill to float32 files on disk (one per entry, written atomically). Keys name
 * the sample (dataset index) and the modality within it.
 * @module
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';

/** One cached entry: the projector input of one modality of one sample. */
export interface CachedFeatures {
  data: Float32Array;
  shape: number[];
}

/** Options of {@link FeatureCache}. */
export interface FeatureCacheOptions {
  /** Bytes kept in memory (default 1 GiB); 0 sends everything to disk. */
  maxMemoryBytes?: number;
  /** Folder for the entries beyond the bound (created on first use). Without it, entries beyond the bound are not cached. */
  dir?: string;
}

/** Hit and miss counts, for logs and the bench. */
export interface FeatureCacheStats {
  hits: number;
  misses: number;
  memoryEntries: number;
  diskEntries: number;
  memoryBytes: number;
}

/** A bounded memory + disk cache of projector inputs. */
export class FeatureCache {
  private readonly memory = new Map<string, CachedFeatures>();
  private readonly disk = new Map<string, number[]>();
  private bytes = 0;
  private hits = 0;
  private misses = 0;
  readonly maxMemoryBytes: number;

  constructor(private readonly options: FeatureCacheOptions = {}) {
    this.maxMemoryBytes = options.maxMemoryBytes ?? 1024 ** 3;
  }

  static key(sampleIndex: number, modalityIndex: number): string {
    return `${sampleIndex}-${modalityIndex}`;
  }

  async get(key: string): Promise<CachedFeatures | undefined> {
    const m = this.memory.get(key);
    if (m) {
      this.hits++;
      return m;
    }
    const shape = this.disk.get(key);
    if (shape && this.options.dir) {
      const buf = await fs.readFile(path.join(this.options.dir, `${key}.f32`));
      this.hits++;
      return { data: new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4).slice(), shape };
    }
    this.misses++;
    return undefined;
  }

  async set(key: string, value: CachedFeatures): Promise<void> {
    const size = value.data.byteLength;
    if (this.bytes + size <= this.maxMemoryBytes) {
      this.memory.set(key, { data: value.data.slice(), shape: [...value.shape] });
      this.bytes += size;
      return;
    }
    if (!this.options.dir) return;
    await fs.mkdir(this.options.dir, { recursive: true });
    const file = path.join(this.options.dir, `${key}.f32`);
    const tmp = `${file}.tmp-${process.pid}`;
    await fs.writeFile(tmp, new Uint8Array(value.data.buffer, value.data.byteOffset, value.data.byteLength));
    await fs.rename(tmp, file);
    this.disk.set(key, [...value.shape]);
  }

  stats(): FeatureCacheStats {
    return { hits: this.hits, misses: this.misses, memoryEntries: this.memory.size, diskEntries: this.disk.size, memoryBytes: this.bytes };
  }

  /** Drops every entry (and the disk folder). */
  async clear(): Promise<void> {
    this.memory.clear();
    this.disk.clear();
    this.bytes = 0;
    if (this.options.dir) await fs.rm(this.options.dir, { recursive: true, force: true });
  }
}
