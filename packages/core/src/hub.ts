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
  /**
   * Files to download for a model, as globs over repo paths (`*` stays within a folder, `**` crosses them,
   * `**\/` also matches no folder at all).
   * Default {@link DEFAULT_ALLOW_PATTERNS}: top-level configs, weights and tokenizer files.
   */
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

/** A glob over repo paths: `*` matches within one path segment, `**` across segments, `**\/` zero or more folders. */
function globToRegExp(glob: string): RegExp {
  const token = new Map([['**/', '(?:.*/)?'], ['**', '.*'], ['*', '[^/]*']]);
  const body = glob
    .split(/(\*\*\/|\*\*|\*)/)
    .map((part) => token.get(part) ?? part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
    .join('');
  return new RegExp(`^${body}$`);
}

/** `org/name` -> `models--org--name`. */
export function repoFolderName(repoId: string): string {
  return `models--${repoId.split('/').join('--')}`;
}

const HUB_ID = /^[A-Za-z0-9][\w.-]*(\/[\w.-]+)?$/;
const COMMIT = /^[0-9a-f]{40}$/;

async function isDir(p: string): Promise<boolean> {
  return fs.stat(p).then((s) => s.isDirectory(), () => false);
}

/** Resolves model names to local folders. */
export class ModelResolver {
  readonly cacheDir: string;
  readonly offline: boolean;
  readonly hubUrl: string;
  private readonly accessToken: string | undefined;
  private readonly allowRegexps: RegExp[];

  constructor(options: ModelResolverOptions = {}) {
    const env = options.env ?? process.env;
    this.cacheDir = options.cacheDir ?? defaultHubCache(env);
    this.offline = options.offline ?? ['1', 'true', 'yes', 'on'].includes((env['HF_HUB_OFFLINE'] ?? '').toLowerCase());
    this.hubUrl = options.hubUrl ?? env['HF_ENDPOINT'] ?? 'https://huggingface.co';
    this.accessToken = options.accessToken ?? env['HF_TOKEN'];
    this.allowRegexps = (options.allowPatterns ?? DEFAULT_ALLOW_PATTERNS).map(globToRegExp);
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
    if (!COMMIT.test(revision)) {
      try {
        commit = (await fs.readFile(path.join(repoDir, 'refs', revision), 'utf8')).trim();
      } catch {
        return undefined;
      }
    }
    const snap = path.join(repoDir, 'snapshots', commit);
    return (await isDir(snap)) ? snap : undefined;
  }

  /**
   * Downloads the allowed files of `repoId` at `revision` into the cache and returns the snapshot folder.
   *
   * The layout is the one `huggingface-cli download` writes: the revision is first resolved to its commit
   * (`modelInfo`), every file is fetched at that commit (`downloadFileToCacheDir` stores it under
   * `blobs/<etag>` and links `snapshots/<commit>/<path>` to it), and `refs/<revision>` is written last, so
   * an interrupted download is never mistaken for a complete snapshot by {@link findInCache}.
   */
  async download(repoId: string, revision = 'main'): Promise<string> {
    let hub: typeof import('@huggingface/hub');
    try {
      hub = await import('@huggingface/hub');
    } catch (e) {
      throw new ModelResolveError(repoId, `@huggingface/hub could not be loaded: ${(e as Error).message}`, { cause: e });
    }
    const credentials = this.accessToken ? { accessToken: this.accessToken } : {};
    let commit: string;
    try {
      const info = await hub.modelInfo({ name: repoId, revision, hubUrl: this.hubUrl, additionalFields: ['sha'], ...credentials });
      const sha = (info as { sha?: unknown }).sha;
      if (typeof sha !== 'string' || !COMMIT.test(sha)) throw new Error(`the hub returned no commit for revision "${revision}"`);
      commit = sha;
    } catch (e) {
      throw new ModelResolveError(repoId, `looking up revision "${revision}" on ${this.hubUrl} failed: ${(e as Error).message}`, {
        cause: e,
        suggestions: ['Check the model id and revision, your network, and HF_TOKEN for gated or private models.'],
      });
    }
    const common = { repo: { type: 'model' as const, name: repoId }, revision: commit, hubUrl: this.hubUrl, ...credentials };
    const wanted: string[] = [];
    try {
      for await (const f of hub.listFiles({ ...common, recursive: true })) {
        if (f.type === 'file' && this.allowed(f.path)) wanted.push(f.path);
      }
    } catch (e) {
      throw new ModelResolveError(repoId, `listing files on ${this.hubUrl} failed: ${(e as Error).message}`, { cause: e });
    }
    if (!wanted.some((p) => path.posix.basename(p) === 'config.json' || p.endsWith('.safetensors'))) {
      throw new ModelResolveError(repoId, `no config.json or safetensors files found on ${this.hubUrl} at ${commit}`);
    }
    const repoDir = path.join(this.cacheDir, repoFolderName(repoId));
    for (const p of wanted) {
      try {
        await hub.downloadFileToCacheDir({ ...common, path: p, cacheDir: this.cacheDir });
      } catch (e) {
        throw new ModelResolveError(repoId, `downloading ${p} failed: ${(e as Error).message}`, { cause: e });
      }
    }
    if (revision !== commit) {
      await fs.mkdir(path.join(repoDir, 'refs'), { recursive: true });
      await fs.writeFile(path.join(repoDir, 'refs', revision), commit);
    }
    return path.join(repoDir, 'snapshots', commit);
  }

  /** Whether `file` (a repo path) matches an allow pattern; `*` matches within one path segment. */
  private allowed(file: string): boolean {
    return this.allowRegexps.some((re) => re.test(file));
  }
}
