/**
 * Model resolver: turns a local path or a Hugging Face hub id into a local model folder.
 *
 * Order: an existing local folder; then the Hugging Face cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
 * `~/.cache/huggingface/hub`, layout `models--org--name/snapshots/<rev>/`, with `refs/<branch>` naming the
 * commit); then a download with `@huggingface/hub` into that same cache, unless `HF_HUB_OFFLINE=1`.
 * @module
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ModelResolveError } from './errors.js';

/** Options of {@link ModelResolver}. */
export interface ModelResolverOptions {
  /** Cache folder (the `hub` folder itself). Default from `HF_HUB_CACHE` / `HF_HOME`. */
  cacheDir?: string;
  /** Never download. Default: `HF_HUB_OFFLINE=1`. */
  offline?: boolean;
  /** Hub endpoint. Default `HF_ENDPOINT` or https://huggingface.co. */
  hubUrl?: string;
  /** Access token for gated/private repos. Default `HF_TOKEN`. */
  accessToken?: string;
  /** Environment to read (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** Files to download for a model, as glob-like suffix patterns. */
  allowPatterns?: string[];
}

/** Options of one resolution. */
export interface ResolveOptions {
  /** Branch, tag or commit (default `main`). */
  revision?: string;
}

/** Files downloaded by default: configs, safetensors weights and tokenizer files. */
export const DEFAULT_ALLOW_PATTERNS = [
  'config.json',
  'preprocessor_config.json',
  '*.safetensors',
  'model.safetensors.index.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'generation_config.json',
];

/** The hub cache folder for an environment. */
export function defaultHubCache(env: NodeJS.ProcessEnv = process.env): string {
  if (env['HF_HUB_CACHE']) return env['HF_HUB_CACHE'];
  const home = env['HF_HOME'] ?? path.join(env['XDG_CACHE_HOME'] ?? path.join(os.homedir(), '.cache'), 'huggingface');
  return path.join(home, 'hub');
}

/** `org/name` -> `models--org--name`. */
export function repoFolderName(repoId: string): string {
  return `models--${repoId.split('/').join('--')}`;
}

const HUB_ID = /^[A-Za-z0-9][\w.-]*(\/[\w.-]+)?$/;

async function isDir(p: string): Promise<boolean> {
  return fs.stat(p).then((s) => s.isDirectory(), () => false);
}

/** Resolves model names to local folders. */
export class ModelResolver {
  readonly cacheDir: string;
  readonly offline: boolean;
  readonly hubUrl: string;
  private readonly accessToken: string | undefined;
  private readonly allowPatterns: string[];

  constructor(options: ModelResolverOptions = {}) {
    const env = options.env ?? process.env;
    this.cacheDir = options.cacheDir ?? defaultHubCache(env);
    this.offline = options.offline ?? ['1', 'true', 'yes', 'on'].includes((env['HF_HUB_OFFLINE'] ?? '').toLowerCase());
    this.hubUrl = options.hubUrl ?? env['HF_ENDPOINT'] ?? 'https://huggingface.co';
    this.accessToken = options.accessToken ?? env['HF_TOKEN'];
    this.allowPatterns = options.allowPatterns ?? DEFAULT_ALLOW_PATTERNS;
  }

  /** Resolves `nameOrPath` to a local folder, downloading it if needed and allowed. */
  async resolve(nameOrPath: string, options: ResolveOptions = {}): Promise<string> {
    if (await isDir(nameOrPath)) return path.resolve(nameOrPath);
    if (!HUB_ID.test(nameOrPath) || nameOrPath.startsWith('.') || nameOrPath.includes('..')) {
      throw new ModelResolveError(nameOrPath, 'not a local folder, and not a valid hub id (org/name)');
    }
    const revision = options.revision ?? 'main';
    const cached = await this.findInCache(nameOrPath, revision);
    if (cached) return cached;
    if (this.offline) {
      throw new ModelResolveError(
        nameOrPath,
        `not a local folder, not in the cache ${this.cacheDir} (revision ${revision}), and HF_HUB_OFFLINE is set`,
        { suggestions: [`Download it first: huggingface-cli download ${nameOrPath}`, 'or unset HF_HUB_OFFLINE'] },
      );
    }
    return this.download(nameOrPath, revision);
  }

  /** The cached snapshot folder for `repoId` at `revision`, if present. */
  async findInCache(repoId: string, revision = 'main'): Promise<string | undefined> {
    const repoDir = path.join(this.cacheDir, repoFolderName(repoId));
    let commit = revision;
    if (!/^[0-9a-f]{40}$/.test(revision)) {
      try {
        commit = (await fs.readFile(path.join(repoDir, 'refs', revision), 'utf8')).trim();
      } catch {
        return undefined;
      }
    }
    const snap = path.join(repoDir, 'snapshots', commit);
    return (await isDir(snap)) ? snap : undefined;
  }

  /** Downloads the allowed files of `repoId` into the cache and returns the snapshot folder. */
  async download(repoId: string, revision = 'main'): Promise<string> {
    let hub: typeof import('@huggingface/hub');
    try {
      hub = await import('@huggingface/hub');
    } catch (e) {
      throw new ModelResolveError(repoId, `@huggingface/hub could not be loaded: ${(e as Error).message}`, { cause: e });
    }
    const common = {
      repo: { type: 'model' as const, name: repoId },
      revision,
      hubUrl: this.hubUrl,
      ...(this.accessToken ? { accessToken: this.accessToken } : {}),
    };
    const wanted: string[] = [];
    try {
      for await (const f of hub.listFiles({ ...common, recursive: true })) {
        if (f.type === 'file' && this.allowed(f.path)) wanted.push(f.path);
      }
    } catch (e) {
      throw new ModelResolveError(repoId, `listing files on ${this.hubUrl} failed: ${(e as Error).message}`, { cause: e });
    }
    if (!wanted.length) throw new ModelResolveError(repoId, `no config or safetensors files found on ${this.hubUrl}`);
    let last = '';
    for (const p of wanted) {
      try {
        last = await hub.downloadFileToCacheDir({ ...common, path: p, cacheDir: this.cacheDir });
      } catch (e) {
        throw new ModelResolveError(repoId, `downloading ${p} failed: ${(e as Error).message}`, { cause: e });
      }
    }
    // downloadFileToCacheDir returns <cache>/models--x--y/snapshots/<commit>/<path>
    const rel = wanted[wanted.length - 1]!;
    return last.slice(0, last.length - rel.length - 1);
  }

  private allowed(file: string): boolean {
    const base = path.posix.basename(file);
    return this.allowPatterns.some((p) => (p.startsWith('*') ? base.endsWith(p.slice(1)) : base === p || file === p));
  }
}
