/**
 * The model resolver: local folders, the Hugging Face cache layout, offline refusal, and a real download
 * through @huggingface/hub from a loopback server (127.0.0.1) that emulates the hub endpoints the library
 * calls. No internet.
 *
 * Endpoints used by @huggingface/hub 2.x for `modelInfo` + `listFiles` + `downloadFileToCacheDir`:
 *   GET  /api/models/<repo>/revision/<rev>?expand=...          model info, incl. `sha` (the commit)
 *   GET  /api/models/<repo>/tree/<rev>?recursive=true&expand=false   file list, paginated by a Link header
 *   POST /api/models/<repo>/paths-info/<rev>  {paths, expand}    per-file oid / lfs.oid (the blob etag)
 *   GET  /<repo>/resolve/<rev>/<path>  (Range: bytes=0-0)        206, Content-Range (size), ETag
 *   GET  /<repo>/resolve/<rev>/<path>                           200, the bytes
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  defaultHubCache, ModelResolveError, ModelResolver, readSafetensors, repoFolderName, serializeSafetensors,
} from '@multimeditron/core';

const COMMIT = 'a'.repeat(8) + '0123456789abcdef0123456789abcdef';
const OLD_COMMIT = 'b'.repeat(40);

interface RepoFile {
  path: string;
  bytes: Buffer;
  lfs: boolean;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const gitOid = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

const files: RepoFile[] = [
  { path: '.gitattributes', bytes: Buffer.from('*.safetensors filter=lfs diff=lfs merge=lfs -text\n'), lfs: false },
  { path: 'README.md', bytes: Buffer.from('# toy\n'), lfs: false },
  { path: 'config.json', bytes: Buffer.from('{"model_type": "clip", "hidden_size": 4}\n'), lfs: false },
  { path: 'preprocessor_config.json', bytes: Buffer.from('{"crop_size": 32}\n'), lfs: false },
  { path: 'model.safetensors', bytes: serializeSafetensors({ w: { data: Float32Array.from([1, 2, 3, 4]), shape: [2, 2] } }), lfs: true },
  { path: 'onnx/model.safetensors', bytes: Buffer.from('not downloaded: not top level'), lfs: true },
];

/** The etag the hub gives a file: the sha256 of LFS files, the git blob id of others. */
const etagOf = (f: RepoFile) => (f.lfs ? sha256(f.bytes) : gitOid(f.bytes));

let server: http.Server;
let hubUrl: string;
let requests: string[] = [];
let tmp: string;

function json(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

function handle(req: http.IncomingMessage, res: http.ServerResponse, body: string): void {
  const url = new URL(req.url!, hubUrl);
  requests.push(`${req.method} ${url.pathname}${url.search}`);
  const repo = 'acme/toy-model';
  const known = (r: string) => r === 'main' || r === COMMIT;
  let m: RegExpMatchArray | null;
  if ((m = url.pathname.match(/^\/api\/models\/(.+)\/revision\/([^/]+)$/)) && req.method === 'GET') {
    if (m[1] !== repo || !known(decodeURIComponent(m[2]!))) return json(res, 404, { error: 'Repository not found' });
    return json(res, 200, {
      _id: '0123', id: repo, sha: COMMIT, private: false, gated: false, downloads: 0, likes: 0, pipeline_tag: 'feature-extraction',
      lastModified: '2024-01-01T00:00:00.000Z',
    });
  }
  if ((m = url.pathname.match(/^\/api\/models\/(.+)\/tree\/([^/]+)$/)) && req.method === 'GET') {
    if (m[1] !== repo || decodeURIComponent(m[2]!) !== COMMIT) return json(res, 404, { error: 'Revision not found' });
    const entries = [
      ...files.map((f) => ({ type: 'file', path: f.path, oid: gitOid(f.bytes), size: f.bytes.length, ...(f.lfs ? { lfs: { oid: sha256(f.bytes), size: f.bytes.length, pointerSize: 134 } } : {}) })),
      { type: 'directory', path: 'onnx', oid: 'd'.repeat(40), size: 0 },
    ];
    // two pages, as the hub paginates large trees
    const page = Number(url.searchParams.get('cursor') ?? 0);
    const slice = entries.slice(page * 4, page * 4 + 4);
    const headers: Record<string, string> = page === 0 ? { Link: `<${hubUrl}${url.pathname}?recursive=true&expand=false&cursor=1>; rel="next"` } : {};
    return json(res, 200, slice, headers);
  }
  if ((m = url.pathname.match(/^\/api\/models\/(.+)\/paths-info\/([^/]+)$/)) && req.method === 'POST') {
    const { paths } = JSON.parse(body) as { paths: string[] };
    return json(res, 200, files.filter((f) => paths.includes(f.path)).map((f) => ({
      type: 'file', path: f.path, oid: gitOid(f.bytes), size: f.bytes.length,
      ...(f.lfs ? { lfs: { oid: sha256(f.bytes), size: f.bytes.length, pointerSize: 134 } } : {}),
      lastCommit: { id: OLD_COMMIT, title: 'an older commit touched this file', date: '2023-01-01T00:00:00.000Z' },
    })));
  }
  if ((m = url.pathname.match(/^\/(.+?\/.+?)\/resolve\/([^/]+)\/(.+)$/)) && req.method === 'GET') {
    const f = files.find((x) => x.path === decodeURIComponent(m![3]!));
    if (m[1] !== repo || !f) return json(res, 404, { error: 'Entry not found' }, { 'X-Error-Code': 'EntryNotFound' });
    const headers = { ETag: `"${etagOf(f)}"`, 'X-Repo-Commit': COMMIT, 'Content-Type': 'application/octet-stream' };
    if (req.headers.range === 'bytes=0-0') {
      res.writeHead(206, { ...headers, 'Content-Range': `bytes 0-0/${f.bytes.length}`, 'Content-Length': '1' });
      return void res.end(f.bytes.subarray(0, 1));
    }
    res.writeHead(200, { ...headers, 'Content-Length': String(f.bytes.length) });
    return void res.end(f.bytes);
  }
  json(res, 404, { error: `not emulated: ${req.method} ${url.pathname}` });
}

const realDebug = console.debug;

beforeAll(async () => {
  console.debug = () => {}; // @huggingface/hub logs each download at debug level
  tmp = await fs.realpath(await fs.mkdtemp(path.join(os.tmpdir(), 'mm-hub-')));
  server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => handle(req, res, body));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  hubUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  console.debug = realDebug;
  await new Promise((resolve) => server.close(resolve));
  await fs.rm(tmp, { recursive: true, force: true });
});

beforeEach(() => {
  requests = [];
});

/** Builds the layout `huggingface-cli download` writes, by hand. */
async function fakeCache(hubDir: string, repoId: string, refs: Record<string, string>, snapshots: Record<string, Record<string, string>>) {
  const repo = path.join(hubDir, repoFolderName(repoId));
  for (const [ref, commit] of Object.entries(refs)) {
    await fs.mkdir(path.join(repo, 'refs'), { recursive: true });
    await fs.writeFile(path.join(repo, 'refs', ref), commit);
  }
  for (const [commit, content] of Object.entries(snapshots)) {
    for (const [rel, text] of Object.entries(content)) {
      const blob = path.join(repo, 'blobs', sha256(Buffer.from(text)));
      await fs.mkdir(path.dirname(blob), { recursive: true });
      await fs.writeFile(blob, text);
      const link = path.join(repo, 'snapshots', commit, rel);
      await fs.mkdir(path.dirname(link), { recursive: true });
      await fs.symlink(path.relative(path.dirname(link), blob), link);
    }
  }
  return repo;
}

describe('cache location', () => {
  test('HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub', () => {
    expect(defaultHubCache({ HF_HUB_CACHE: '/c', HF_HOME: '/h' })).toBe('/c');
    expect(defaultHubCache({ HF_HOME: '/h' })).toBe('/h/hub');
    expect(defaultHubCache({ XDG_CACHE_HOME: '/x' })).toBe('/x/huggingface/hub');
    expect(defaultHubCache({})).toBe(path.join(os.homedir(), '.cache', 'huggingface', 'hub'));
    expect(new ModelResolver({ env: { HF_HOME: '/h' } }).cacheDir).toBe('/h/hub');
    expect(repoFolderName('openai/clip-vit-base-patch32')).toBe('models--openai--clip-vit-base-patch32');
  });
});

describe('resolution order', () => {
  test('an existing local folder wins, as an absolute path', async () => {
    const local = path.join(tmp, 'local-model');
    await fs.mkdir(local);
    const r = new ModelResolver({ env: { HF_HOME: path.join(tmp, 'empty-home'), HF_HUB_OFFLINE: '1' } });
    const rel = path.relative(process.cwd(), local);
    expect(await r.resolve(rel)).toBe(local);
  });

  test('a hub id is found in the cache layout under $HF_HOME: refs/<branch> names the snapshot', async () => {
    const home = path.join(tmp, 'hf-home');
    await fakeCache(path.join(home, 'hub'), 'openai/clip-tiny', { main: COMMIT, v1: OLD_COMMIT }, {
      [COMMIT]: { 'config.json': '{"v": 2}' },
      [OLD_COMMIT]: { 'config.json': '{"v": 1}' },
    });
    const r = new ModelResolver({ env: { HF_HOME: home, HF_HUB_OFFLINE: '1' }, hubUrl });
    const snap = await r.resolve('openai/clip-tiny');
    expect(snap).toBe(path.join(home, 'hub', 'models--openai--clip-tiny', 'snapshots', COMMIT));
    expect(await fs.readFile(path.join(snap, 'config.json'), 'utf8')).toBe('{"v": 2}');
    expect(await r.resolve('openai/clip-tiny', { revision: 'v1' })).toBe(path.join(home, 'hub', 'models--openai--clip-tiny', 'snapshots', OLD_COMMIT));
    // a commit id needs no ref
    expect(await r.resolve('openai/clip-tiny', { revision: OLD_COMMIT })).toMatch(new RegExp(`snapshots/${OLD_COMMIT}$`));
    expect(requests).toEqual([]);
  });

  test('offline, a hub id missing from the cache is refused with a clear ModelResolveError, without a request', async () => {
    const home = path.join(tmp, 'hf-home');
    // a ref pointing at a snapshot that is not there does not count as cached
    await fakeCache(path.join(home, 'hub'), 'acme/dangling', { main: COMMIT }, {});
    const r = new ModelResolver({ env: { HF_HOME: home, HF_HUB_OFFLINE: '1' }, hubUrl });
    expect(r.offline).toBe(true);
    for (const id of ['acme/not-cached', 'acme/dangling']) {
      const err = await r.resolve(id).then(() => undefined, (e) => e);
      expect(err).toBeInstanceOf(ModelResolveError);
      expect(err.code).toBe('E_RESOLVE');
      expect(err.modelId).toBe(id);
      expect(err.message).toBe(
        `Cannot resolve model "${id}": not a local folder, not in the cache ${path.join(home, 'hub')} (revision main), and HF_HUB_OFFLINE is set`,
      );
      expect(err.suggestions).toContain(`Download it first: huggingface-cli download ${id}`);
    }
    expect(requests).toEqual([]);
  });

  test('names that are neither a folder nor a hub id are refused', async () => {
    const r = new ModelResolver({ env: { HF_HOME: tmp }, hubUrl });
    for (const bad of ['./missing-folder', '../x', 'a/b/c', 'has space/x']) {
      await expect(r.resolve(bad)).rejects.toThrow(/not a local folder, and not a valid hub id/);
    }
    expect(requests).toEqual([]);
  });
});

describe('download through @huggingface/hub from a loopback hub', () => {
  const repoId = 'acme/toy-model';

  test('writes a proper cache layout that a second, offline resolve finds', async () => {
    const home = path.join(tmp, 'download-home');
    const online = new ModelResolver({ env: { HF_HOME: home }, hubUrl });
    expect(online.offline).toBe(false);
    const snap = await online.resolve(repoId);
    const repoDir = path.join(home, 'hub', 'models--acme--toy-model');
    expect(snap).toBe(path.join(repoDir, 'snapshots', COMMIT));

    // refs/main names the commit; every file sits in the one snapshot of that commit
    expect(await fs.readFile(path.join(repoDir, 'refs', 'main'), 'utf8')).toBe(COMMIT);
    expect(await fs.readdir(path.join(repoDir, 'snapshots'))).toEqual([COMMIT]);
    expect((await fs.readdir(snap)).sort()).toEqual(['config.json', 'model.safetensors', 'preprocessor_config.json']);
    // snapshot entries are relative symlinks to blobs named by etag
    const wanted = files.filter((f) => ['config.json', 'preprocessor_config.json', 'model.safetensors'].includes(f.path));
    expect((await fs.readdir(path.join(repoDir, 'blobs'))).sort()).toEqual(wanted.map(etagOf).sort());
    for (const f of wanted) {
      const link = path.join(snap, f.path);
      expect((await fs.lstat(link)).isSymbolicLink()).toBe(true);
      expect(await fs.readlink(link)).toBe(path.join('..', '..', 'blobs', etagOf(f)));
      expect((await fs.readFile(link)).equals(f.bytes)).toBe(true);
    }
    expect(Array.from((await readSafetensors(path.join(snap, 'model.safetensors'))).tensors.get('w')!.data as Float32Array)).toEqual([1, 2, 3, 4]);

    // exactly the endpoints listed at the top of this file; README, .gitattributes and onnx/ were not fetched
    const kinds = requests.map((r) => r.replace(/\?.*$/, '').replace(COMMIT, '<commit>'));
    expect(new Set(kinds)).toEqual(new Set([
      'GET /api/models/acme/toy-model/revision/main',
      'GET /api/models/acme/toy-model/tree/<commit>',
      'POST /api/models/acme/toy-model/paths-info/<commit>',
      'GET /acme/toy-model/resolve/<commit>/config.json',
      'GET /acme/toy-model/resolve/<commit>/preprocessor_config.json',
      'GET /acme/toy-model/resolve/<commit>/model.safetensors',
    ]));
    expect(requests.filter((r) => r.includes('/tree/'))).toHaveLength(2); // followed the Link header

    // second resolve, offline: found in the cache, no request
    requests = [];
    const offline = new ModelResolver({ env: { HF_HOME: home, HF_HUB_OFFLINE: '1' }, hubUrl });
    expect(await offline.resolve(repoId)).toBe(snap);
    // and online too: the cache comes before the network
    expect(await online.resolve(repoId)).toBe(snap);
    expect(requests).toEqual([]);
  });

  test('a repository the hub does not know is a ModelResolveError naming the hub', async () => {
    const r = new ModelResolver({ env: { HF_HOME: path.join(tmp, 'home-404') }, hubUrl });
    const err = await r.resolve('acme/unknown').then(() => undefined, (e) => e);
    expect(err).toBeInstanceOf(ModelResolveError);
    expect(err.message).toContain(`looking up revision "main" on ${hubUrl} failed: Repository not found`);
    expect(await fs.readdir(path.join(tmp, 'home-404')).catch(() => [])).toEqual([]);
  });

  test('allowPatterns choose the files; "*" stays within a folder and "**" crosses folders', async () => {
    const home = path.join(tmp, 'pattern-home');
    const r = new ModelResolver({ env: { HF_HOME: home }, hubUrl, allowPatterns: ['config.json', '**/*.safetensors'] });
    const snap = await r.resolve(repoId);
    expect((await fs.readdir(snap)).sort()).toEqual(['config.json', 'model.safetensors', 'onnx']);
    expect(await fs.readdir(path.join(snap, 'onnx'))).toEqual(['model.safetensors']);
  });
});
